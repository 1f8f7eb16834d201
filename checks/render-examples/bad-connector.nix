# A gitea connector without baseURL or client credentials: check-config must fail.
{ credentialsDirectory }:
{
  expect = "check-config-fails";
  settings = {
    issuer = "https://sso.example.org";
    connectors = [
      {
        type = "gitea";
        id = "forgejo";
        name = "Forgejo";
        config = {
          redirectURI = "https://sso.example.org/callback";
        };
      }
    ];
  };
  credentials = { };
}
