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
    "tests"
    "benches"
    "examples"
    "migrations"
    "templates"
    "static"
    "web"
  ];
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
      lib.elem top keep;
  };
in
rustPlatform.buildRustPackage {
  pname = "oxidex";
  inherit (manifest) version;
  inherit src;

  cargoLock.lockFile = ./Cargo.lock;

  # The build sandbox has no network and no other programs: the crate's `sandboxed-tests`
  # feature skips exactly the tests that need loopback servers or external binaries.
  checkFeatures = [ "sandboxed-tests" ];

  meta = {
    inherit (manifest) description;
    homepage = manifest.repository;
    license = lib.licenses.asl20;
    mainProgram = "oxidex";
    platforms = lib.platforms.linux;
  };
}
