# Nothing but the issuer: every default of the module (HTTP on 127.0.0.1:5556, SQLite in the
# state directory).
{ credentialsDirectory }:
{
  expect = "pass";
  settings.issuer = "http://127.0.0.1:5556/dex";
  credentials = { };
}
