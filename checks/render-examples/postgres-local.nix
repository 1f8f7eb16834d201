# The module's default for `postgres`: the server on this host through its Unix socket, peer
# authentication as the unit's user (host, database and user come from the renderer).
{ credentialsDirectory }:
{
  expect = "pass";
  settings = {
    issuer = "https://sso.example.org";
    storage.type = "postgres";
    staticClients = [
      {
        id = "grafana";
        name = "Grafana";
        redirectURIs = [ "https://grafana.example.org/login/generic_oauth" ];
        secretFile = "${credentialsDirectory}/grafana-client-secret";
      }
    ];
  };
  credentials.grafana-client-secret = "/run/secrets/oxidex/grafana-client-secret";
}
