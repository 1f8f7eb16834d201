# The reference deployment: Grafana -> oxidex -> Forgejo, secrets as systemd credentials.
# Written as the values of `services.oxidex.*`; used by docs/nix.md, the module-evaluation
# check and checks/render-contract.sh.
{ credentialsDirectory }:
{
  expect = "pass";
  settings = {
    issuer = "https://sso.example.org";
    web.http = "127.0.0.1:5556";
    telemetry.http = "127.0.0.1:5558";
    oauth2.skipApprovalScreen = true;
    staticClients = [
      {
        id = "grafana";
        name = "Grafana";
        redirectURIs = [
          "https://grafana.example.org/login/generic_oauth"
          "http://grafana.home.arpa:3000/login/generic_oauth"
        ];
        secretFile = "${credentialsDirectory}/grafana-client-secret";
      }
    ];
    connectors = [
      {
        type = "gitea";
        id = "forgejo";
        name = "Forgejo";
        config = {
          baseURL = "https://git.example.org";
          clientID = "0b1e5a4c-7f0e-4d52-9d7a-3c9b8e2f6a10";
          clientSecretFile = "${credentialsDirectory}/forgejo-client-secret";
          redirectURI = "https://sso.example.org/callback";
          orgs = [
            {
              name = "homelab";
              teams = [ "admins" ];
            }
          ];
        };
      }
    ];
  };
  credentials = {
    grafana-client-secret = "/run/secrets/oxidex/grafana-client-secret";
    forgejo-client-secret = "/run/secrets/oxidex/forgejo-client-secret";
  };
}
