# VM test of the OCI image: load the streamed image into podman, run it with a mounted
# configuration as the image's unprivileged user, read discovery, and check that the SQLite
# database landed in the image's state directory.
{
  pkgs,
  oxidex,
  image,
  ...
}:
let
  issuer = "http://127.0.0.1:5556/dex";
  config = pkgs.writeText "oxidex-image-test.json" (
    builtins.toJSON {
      inherit issuer;
      web.http = "0.0.0.0:5556";
      telemetry.http = "0.0.0.0:5558";
      storage = {
        type = "sqlite3";
        config.file = "/var/lib/oxidex/oxidex.db";
      };
    }
  );
  ref = "oxidex:${oxidex.version}";
in
{
  name = "oxidex-image";

  nodes.machine = {
    virtualisation.podman.enable = true;
    virtualisation.memorySize = 1024;
  };

  testScript = ''
    import json

    machine.wait_for_unit("multi-user.target")
    machine.succeed("${image} | podman load")
    user = machine.succeed("podman image inspect --format '{{.Config.User}}' ${ref}").strip()
    assert user == "65534:65534", f"image user is {user!r}"
    machine.succeed(
        "podman run -d --name oxidex -p 5556:5556 -p 5558:5558 "
        + "-v oxidex-state:/var/lib/oxidex "
        + "-v ${config}:/etc/oxidex/config.json:ro ${ref}"
    )
    machine.wait_until_succeeds("curl -sf ${issuer}/.well-known/openid-configuration")
    discovery = json.loads(machine.succeed("curl -sf ${issuer}/.well-known/openid-configuration"))
    assert discovery["issuer"] == "${issuer}", discovery
    assert discovery["token_endpoint"] == "${issuer}/token", discovery
    machine.succeed("curl -sf http://127.0.0.1:5558/healthz/live")
    # the database lives in the volume that starts from the image's state directory
    volume = machine.succeed("podman volume inspect --format '{{.Mountpoint}}' oxidex-state").strip()
    machine.succeed(f"test -s {volume}/oxidex.db")
  '';
}
