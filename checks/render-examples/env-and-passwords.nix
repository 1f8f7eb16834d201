# Other secret forms: a connector secret from the environment file ($VAR expansion), the client
# id from a credential through `$CREDENTIALS_DIRECTORY`, static passwords with `hashFile`;
# memory storage, JSON logs, telemetry, plain HTTP disabled in favour of explicit addresses.
{ credentialsDirectory }:
{
  expect = "pass";
  settings = {
    issuer = "https://id.example.net/dex";
    web.http = "0.0.0.0:5556";
    telemetry.http = "0.0.0.0:5558";
    storage.type = "memory";
    logger = {
      level = "debug";
      format = "json";
    };
    enablePasswordDB = true;
    staticPasswords = [
      {
        email = "admin@example.net";
        username = "admin";
        userID = "08a8684b-db88-4b73-90a9-3cd1661f5466";
        hashFile = "${credentialsDirectory}/admin-password-hash";
      }
    ];
    staticClients = [
      {
        id = "argocd";
        name = "Argo CD";
        redirectURIs = [ "https://argocd.example.net/auth/callback" ];
        secretFile = "${credentialsDirectory}/argocd-client-secret";
      }
      {
        id = "kubectl";
        name = "kubectl";
        public = true;
        redirectURIs = [ "http://localhost:8000" ];
      }
    ];
    connectors = [
      {
        type = "gitea";
        id = "forgejo";
        name = "Forgejo";
        config = {
          baseURL = "https://git.example.net";
          clientIDFile = "$CREDENTIALS_DIRECTORY/forgejo-client-id";
          clientSecret = "$FORGEJO_CLIENT_SECRET";
          redirectURI = "https://id.example.net/dex/callback";
          loadAllGroups = true;
          useLoginAsID = true;
        };
      }
    ];
  };
  credentials = {
    admin-password-hash = "/run/secrets/oxidex/admin-hash";
    argocd-client-secret = "/run/secrets/oxidex/argocd";
    forgejo-client-id = "/run/secrets/oxidex/forgejo-client-id";
  };
}
