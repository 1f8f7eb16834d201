# rustfmt --check on every Rust file of the package source (no dependencies needed).
{ pkgs, oxidex, ... }:
pkgs.runCommand "oxidex-rustfmt"
  {
    nativeBuildInputs = [ pkgs.rustfmt ];
    inherit (oxidex) src;
  }
  ''
    cd "$src"
    find . -name '*.rs' -print0 | xargs -0 rustfmt --check --edition 2024
    touch $out
  ''
