# The oxidex package; callPackage-able (the flake's overlay and packages use it).
{
  lib,
  rustPlatform,
}:
let
  manifest = (lib.importTOML ./Cargo.toml).package;

  # Only what cargo needs, so editing Nix files, docs or checks does not rebuild the package.
  keep = [
    "Cargo.toml"
    "Cargo.lock"
    "build.rs"
    "rustfmt.toml"
    ".rustfmt.toml"
    "clippy.toml"
    "src"
    "testkit"
    "tests"
    "benches"
    "examples"
    "migrations"
    "templates"
    "static"
    "web"
  ];
  # The real forge's recorded answers, which the fake forge's contract test reads.
  observed = "checks/forgejo/observed-gitea-1.26.0.json";
  root = toString ./.;
  src = lib.cleanSourceWith {
    name = "oxidex-source";
    src = ./.;
    filter =
      path: type:
      let
        relative = lib.removePrefix "${root}/" (toString path);
        top = lib.head (lib.splitString "/" relative);
      in
      lib.elem top keep || relative == observed || lib.hasPrefix "${relative}/" observed;
  };
in
rustPlatform.buildRustPackage {
  pname = "oxidex";
  inherit (manifest) version;
  inherit src;

  cargoLock.lockFile = ./Cargo.lock;

  # The check phase runs the whole `cargo test` suite: the sandbox has no network but
  # brings up `lo` in its own namespace, which is all the tests use (every server they
  # start listens on 127.0.0.1:0, and no test runs a program other than oxidex).

  meta = {
    inherit (manifest) description;
    homepage = manifest.repository;
    license = lib.licenses.asl20;
    mainProgram = "oxidex";
    platforms = lib.platforms.linux;
  };
}
