# `cargo clippy --all-targets -D warnings`, reusing the package's vendored dependencies.
{ pkgs, oxidex, ... }:
oxidex.overrideAttrs (old: {
  pname = "oxidex-clippy";
  nativeBuildInputs = (old.nativeBuildInputs or [ ]) ++ [ pkgs.clippy ];
  buildPhase = ''
    runHook preBuild
    cargo clippy --frozen --offline --all-targets -- -D warnings
    runHook postBuild
  '';
  doCheck = false;
  installPhase = ''
    runHook preInstall
    touch $out
    runHook postInstall
  '';
})
