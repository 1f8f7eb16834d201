# The gRPC admin API on its own port with mutual TLS, its certificate, key and client CA
# passed as systemd credentials (never through the store).
{ credentialsDirectory }:
{
  expect = "pass";
  settings = {
    issuer = "https://sso.example.org";
    enablePasswordDB = true;
    grpc = {
      addr = "127.0.0.1:5557";
      tlsCert = "${credentialsDirectory}/grpc.crt";
      tlsKey = "${credentialsDirectory}/grpc.key";
      tlsClientCA = "${credentialsDirectory}/grpc-client-ca.crt";
    };
  };
  credentials = {
    "grpc.crt" = "/run/secrets/oxidex/grpc.crt";
    "grpc.key" = "/run/secrets/oxidex/grpc.key";
    "grpc-client-ca.crt" = "/run/secrets/oxidex/grpc-client-ca.crt";
  };
}
