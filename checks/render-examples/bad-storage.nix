# Renders fine, but names a storage backend oxidex does not have: check-config must fail.
{ credentialsDirectory }:
{
  expect = "check-config-fails";
  settings = {
    issuer = "https://sso.example.org";
    storage = {
      type = "mysql";
      config.host = "/run/mysqld";
    };
  };
  credentials = { };
}
