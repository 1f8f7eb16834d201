{
  description = "oxidex: a Dex-compatible OpenID Connect identity provider";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        oxidex = final.callPackage ./package.nix { };
        oxidex-image = final.callPackage ./containers/oxidex { };
      };

      packages = forAllSystems (
        _system: pkgs:
        let
          oxidex = pkgs.callPackage ./package.nix { };
        in
        {
          inherit oxidex;
          default = oxidex;
          image = pkgs.callPackage ./containers/oxidex { inherit oxidex; };
        }
      );

      # The module builds its package with the system's pkgs (overlays and cross settings
      # apply) and has a `key`, so importing both names, or the file as well, is harmless.
      nixosModules.oxidex = import ./nixos-module;
      nixosModules.default = self.nixosModules.oxidex;

      checks = forAllSystems (
        system: pkgs:
        let
          inherit (self.packages.${system}) oxidex image;
          args = {
            inherit pkgs oxidex image;
            oxidexModule = self.nixosModules.default;
            inherit (self) nixosModules;
            evalNixos =
              modules:
              nixpkgs.lib.nixosSystem { modules = modules ++ [ { nixpkgs.hostPlatform = system; } ]; };
          };
        in
        {
          # The whole `cargo test` suite runs in the package's check phase.
          package = oxidex;
          clippy = import ./checks/clippy.nix args;
          rustfmt = import ./checks/rustfmt.nix args;
          module-eval = import ./checks/module-eval.nix args;
          forgejo-grafana = pkgs.testers.runNixOSTest (import ./checks/forgejo-grafana.nix args);
          image = pkgs.testers.runNixOSTest (import ./checks/image.nix args);
          ha-postgres = pkgs.testers.runNixOSTest (import ./checks/ha-postgres.nix args);
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            inputsFrom = [ self.packages.${system}.oxidex ];
            packages = [
              pkgs.clippy
              pkgs.rustfmt
              pkgs.rust-analyzer
              pkgs.nixfmt-tree
            ];
          };
        }
      );

      formatter = forAllSystems (_system: pkgs: pkgs.nixfmt-tree);
    };
}
