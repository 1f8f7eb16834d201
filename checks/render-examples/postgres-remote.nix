# Several replicas on one PostgreSQL elsewhere: TCP with scram-sha-256, the password as a
# systemd credential, TLS verified against a private CA, Dex's pool keys passed through.
{ credentialsDirectory }:
{
  expect = "pass";
  settings = {
    issuer = "https://sso.example.org";
    web.http = "0.0.0.0:5556";
    storage = {
      type = "postgres";
      config = {
        host = "db.internal";
        port = 5432;
        database = "oxidex";
        user = "oxidex";
        passwordFile = "${credentialsDirectory}/postgres-password";
        ssl.mode = "require";
        maxOpenConns = 10;
        connectionTimeout = 5;
      };
    };
    connectors = [
      {
        type = "gitea";
        id = "forgejo";
        name = "Forgejo";
        config = {
          baseURL = "https://git.example.org";
          clientIDFile = "${credentialsDirectory}/forgejo-client-id";
          clientSecretFile = "${credentialsDirectory}/forgejo-client-secret";
          redirectURI = "https://sso.example.org/callback";
        };
      }
    ];
    staticClients = [
      {
        id = "grafana";
        name = "Grafana";
        redirectURIs = [ "https://grafana.example.org/login/generic_oauth" ];
        secretFile = "${credentialsDirectory}/grafana-client-secret";
      }
    ];
  };
  credentials = {
    postgres-password = "/run/secrets/oxidex/postgres-password";
    grafana-client-secret = "/run/secrets/oxidex/grafana-client-secret";
    forgejo-client-id = "/run/secrets/oxidex/forgejo-client-id";
    forgejo-client-secret = "/run/secrets/oxidex/forgejo-client-secret";
  };
}
