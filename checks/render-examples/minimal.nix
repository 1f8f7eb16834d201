# The issuer and the (empty) password database, the smallest config oxidex accepts: every
# other value is a default of the module (HTTP on 127.0.0.1:5556, SQLite in the state directory).
{ credentialsDirectory }:
{
  expect = "pass";
  settings.issuer = "http://127.0.0.1:5556/dex";
  settings.enablePasswordDB = true;
  credentials = { };
}
