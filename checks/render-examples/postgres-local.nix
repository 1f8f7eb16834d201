# The module's default for `postgres`: the server on this host through its Unix socket, peer
# authentication as the unit's user (host, database and user come from the renderer).
{ credentialsDirectory }:
{
  expect = "pass";
  settings = {
    issuer = "https://sso.example.org";
    storage.type = "postgres";
    enablePasswordDB = true;
    staticPasswords = [
      {
        email = "admin@example.org";
        username = "admin";
        userID = "3f0c2b9e-5a0d-4c1e-9b7a-2d6e8f1a4c55";
        hashFile = "${credentialsDirectory}/admin-password-hash";
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
    grafana-client-secret = "/run/secrets/oxidex/grafana-client-secret";
    admin-password-hash = "/run/secrets/oxidex/admin-password-hash";
  };
}
