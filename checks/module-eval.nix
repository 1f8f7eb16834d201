# Evaluates NixOS configurations with the module (no VM) and asserts on the generated unit and
# JSON: the reference deployment must render exactly like the pure renderer does, the unit must
# be hardened and load the credentials, an inline secret must fail an assertion, a secret path
# in the store must be refused, and importing the module under both flake names (and by path)
# must work.
{
  pkgs,
  oxidexModule,
  nixosModules,
  evalNixos,
  ...
}:
let
  inherit (pkgs) lib;
  credentialsDirectory = "/run/credentials/oxidex.service";
  example = import ./render-examples/deployment.nix { inherit credentialsDirectory; };

  base = {
    imports = [ oxidexModule ];
    boot.loader.grub.enable = false;
    fileSystems."/".device = "/dev/null";
    system.stateVersion = "26.05";
  };

  evalWith =
    oxidex:
    (evalNixos [
      base
      { services.oxidex = { enable = true; } // oxidex; }
    ]).config;

  good = evalWith {
    inherit (example) settings credentials;
    openFirewall = true;
  };
  bad = evalWith {
    settings = example.settings // {
      staticClients = [
        {
          id = "grafana";
          redirectURIs = [ "https://grafana.example.org/login/generic_oauth" ];
          secret = "inline";
        }
      ];
    };
    inherit (example) credentials;
  };

  # Both flake outputs and the file itself: one module, imported once.
  twice =
    (evalNixos [
      base
      nixosModules.oxidex
      nixosModules.default
      ../nixos-module
      {
        services.oxidex = {
          enable = true;
          inherit (example) settings credentials;
        };
      }
    ]).config;

  # Forces the option values through their types; false when evaluation fails.
  evaluates = config: (builtins.tryEval (builtins.deepSeq config.systemd.services.oxidex.serviceConfig true)).success;
  storePath = "/nix/store/00000000000000000000000000000000-oxidex-secret";
  withCredential = path: evalWith {
    inherit (example) settings;
    credentials = example.credentials // { extra = path; };
  };

  ours = config: lib.filter (a: lib.hasInfix "services.oxidex" a.message) config.assertions;
  failed = config: map (a: a.message) (lib.filter (a: !a.assertion) (ours config));

  unit = good.systemd.services.oxidex;
  sc = unit.serviceConfig;
  json = good.services.oxidex.finalSettings;
  pure =
    (import ../nixos-module/render.nix {
      inherit (example) settings credentials;
      inherit credentialsDirectory;
    }).config;

  checks = {
    "no assertion fails for the reference deployment" = failed good == [ ];
    "module and pure renderer agree" = json == pure;
    "issuer passes through" = json.issuer == "https://sso.example.org";
    "storage defaults to SQLite in the state directory" =
      json.storage == {
        type = "sqlite3";
        config.file = "/var/lib/oxidex/oxidex.db";
      };
    "both Grafana redirect URIs" = lib.length (lib.head json.staticClients).redirectURIs == 2;
    "client secret is a credential file" =
      (lib.head json.staticClients).secretFile == "${credentialsDirectory}/grafana-client-secret";
    "connector secret is a credential file" =
      (lib.head json.connectors).config.clientSecretFile == "${credentialsDirectory}/forgejo-client-secret";
    "no inline secret in the JSON" = !(lib.hasInfix "\"secret\"" (builtins.toJSON json));
    "unset options leave no nulls" = !(lib.hasInfix "null" (builtins.toJSON json));
    "ExecStart serves the generated file" =
      lib.hasSuffix "/bin/oxidex serve ${good.services.oxidex.configFile}" sc.ExecStart;
    "credentials are loaded" =
      lib.sort lib.lessThan sc.LoadCredential == [
        "forgejo-client-secret:/run/secrets/oxidex/forgejo-client-secret"
        "grafana-client-secret:/run/secrets/oxidex/grafana-client-secret"
      ];
    "dynamic user with a state directory" = sc.DynamicUser && sc.StateDirectory == "oxidex";
    "hardened like services.dex or stricter" = lib.all (x: x) [
      (sc.ProtectSystem == "strict")
      sc.ProtectHome
      sc.PrivateTmp
      sc.PrivateDevices
      sc.PrivateUsers
      sc.NoNewPrivileges
      sc.MemoryDenyWriteExecute
      sc.RestrictNamespaces
      sc.RestrictSUIDSGID
      sc.LockPersonality
      sc.ProtectKernelTunables
      sc.ProtectKernelModules
      sc.ProtectControlGroups
      (sc.ProtectProc == "invisible")
      (sc.SystemCallArchitectures == "native")
      (sc.CapabilityBoundingSet == [ "" ])
    ];
    "file descriptor limit raised" = sc.LimitNOFILE >= 65536;
    "imported as nixosModules.oxidex, .default and by path at once" =
      twice.systemd.services.oxidex.serviceConfig.ExecStart == sc.ExecStart;
    "the package comes from the system's pkgs" = lib.hasInfix "oxidex" sc.ExecStart;
    "a credential outside the store is accepted" = evaluates (withCredential "/run/keys/extra");
    "a credential in the store is refused" = !(evaluates (withCredential storePath));
    "a relative credential path is refused" = !(evaluates (withCredential "keys/extra"));
    "an environment file in the store is refused" = !(evaluates (evalWith {
      inherit (example) settings credentials;
      environmentFile = storePath;
    }));
    "firewall opens the HTTP port" = lib.elem 5556 good.networking.firewall.allowedTCPPorts;
    "an inline client secret fails an assertion naming the key" = lib.any (
      m: lib.hasInfix "services.oxidex.settings.staticClients[0].secret" m
    ) (failed bad);
  };
  failures = lib.attrNames (lib.filterAttrs (_: v: !v) checks);
in
if failures != [ ] then
  throw "oxidex module evaluation check failed: ${lib.concatStringsSep "; " failures}"
else
  pkgs.runCommand "oxidex-module-eval"
    {
      passAsFile = [ "rendered" ];
      rendered = builtins.toJSON json;
    }
    ''
      cp "$renderedPath" $out
    ''
