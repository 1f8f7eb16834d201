# A PostgreSQL password file the dynamic user cannot read, since it is not a credential the
# unit loads: the renderer refuses it.
{ credentialsDirectory }:
{
  expect = "render-fails";
  settings = {
    issuer = "https://sso.example.org";
    storage = {
      type = "postgres";
      config = {
        host = "db.internal";
        passwordFile = "/run/secrets/oxidex/postgres-password";
      };
    };
  };
  credentials = { };
}
