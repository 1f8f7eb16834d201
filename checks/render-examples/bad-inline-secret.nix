# Inline secrets and a dangling credential reference: the renderer itself must refuse them
# (in the module they become assertion failures).
{ credentialsDirectory }:
{
  expect = "render-fails";
  settings = {
    issuer = "https://sso.example.org";
    staticClients = [
      {
        id = "grafana";
        redirectURIs = [ "https://grafana.example.org/login/generic_oauth" ];
        secret = "hunter2";
      }
    ];
    connectors = [
      {
        type = "gitea";
        id = "forgejo";
        name = "Forgejo";
        config = {
          baseURL = "https://git.example.org";
          clientID = "x";
          clientSecret = "hunter3";
          clientIDFile = "${credentialsDirectory}/missing";
        };
      }
    ];
  };
  credentials = { };
}
