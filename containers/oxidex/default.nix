# OCI image of oxidex, streamed by a script: `$(nix build .#image --print-out-paths) | docker load`.
# callPackage-able; `oxidex` is the package to put in.
{
  lib,
  dockerTools,
  oxidex,
}:
let
  uid = "65534";
  gid = "65534";
in
dockerTools.streamLayeredImage {
  name = "oxidex";
  tag = oxidex.version;

  contents = [
    oxidex
    dockerTools.caCertificates
    dockerTools.fakeNss
  ];

  # The state directory must belong to the unprivileged user; /tmp must exist for libraries
  # that want it. A volume mounted over /var/lib/oxidex starts from this ownership.
  fakeRootCommands = ''
    mkdir -p var/lib/oxidex etc/oxidex tmp
    chown ${uid}:${gid} var/lib/oxidex
    chmod 0700 var/lib/oxidex
    chmod 1777 tmp
  '';

  config = {
    Entrypoint = [
      (lib.getExe oxidex)
      "serve"
    ];
    # Mount the configuration here (a Kubernetes Secret, a bind mount, …).
    Cmd = [ "/etc/oxidex/config.json" ];
    User = "${uid}:${gid}";
    WorkingDir = "/var/lib/oxidex";
    # Upstream TLS trusts this bundle (and a connector's rootCA). No tzdata: oxidex never
    # reads local time (log timestamps and token times are UTC).
    Env = [ "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt" ];
    ExposedPorts = {
      "5556/tcp" = { };
      "5558/tcp" = { };
    };
    Volumes = {
      "/var/lib/oxidex" = { };
    };
    Labels = {
      "org.opencontainers.image.title" = "oxidex";
      "org.opencontainers.image.description" = oxidex.meta.description or "";
      "org.opencontainers.image.version" = oxidex.version;
      "org.opencontainers.image.source" = oxidex.meta.homepage or "";
      "org.opencontainers.image.licenses" = "Apache-2.0";
    };
  };
}
