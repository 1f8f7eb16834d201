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

  # PostgreSQL: the default (this host, socket, peer) and a server elsewhere (password credential).
  remoteExample = import ./render-examples/postgres-remote.nix { inherit credentialsDirectory; };
  pgLocal = evalWith {
    inherit (example) credentials;
    settings = example.settings // {
      storage.type = "postgres";
    };
  };
  pgRemote = evalWith {
    inherit (remoteExample) settings credentials;
    database.createLocally = false;
  };
  pgRemoteWith =
    storageConfig:
    evalWith {
      inherit (remoteExample) credentials;
      settings = remoteExample.settings // {
        storage = {
          type = "postgres";
          config = storageConfig;
        };
      };
      database.createLocally = false;
    };
  pgInline = pgRemoteWith {
    host = "db.internal";
    password = "inline";
  };
  pgNotCredential = pgRemoteWith {
    host = "db.internal";
    passwordFile = "/run/secrets/oxidex/postgres-password";
  };
  pgNoPassword = pgRemoteWith { host = "db.internal"; };
  pgWithCa = pgRemoteWith {
    host = "db.internal";
    passwordFile = "${credentialsDirectory}/postgres-password";
    ssl = {
      mode = "verify-full";
      caFile = "/etc/ssl/db-ca.pem";
    };
  };
  pgLocalOtherUser = evalWith {
    inherit (example) credentials;
    settings = example.settings // {
      storage = {
        type = "postgres";
        config.user = "someone";
      };
    };
  };
  pgLocalTcp = evalWith {
    inherit (example) credentials;
    settings = example.settings // {
      storage = {
        type = "postgres";
        config.host = "db.internal";
      };
    };
  };
  # HTTPS: the pair as credentials, or an ACME certificate read in place.
  httpsSettings = example.settings // {
    web = {
      http = null;
      https = "0.0.0.0:5554";
    };
  };
  tlsFiles = evalWith {
    inherit (example) credentials;
    settings = httpsSettings;
    tls = {
      certificateFile = "/run/secrets/oxidex/tls.crt";
      keyFile = "/run/secrets/oxidex/tls.key";
    };
    openFirewall = true;
  };
  acmeWith =
    certs:
    (evalNixos [
      base
      {
        security.acme = {
          acceptTerms = true;
          defaults.email = "admin@example.org";
          inherit certs;
        };
        services.oxidex = {
          enable = true;
          inherit (example) credentials;
          settings = httpsSettings;
          tls.acmeHost = "sso.example.org";
        };
      }
    ]).config;
  tlsAcme = acmeWith {
    "sso.example.org" = {
      directory = "/var/lib/acme/sso.example.org";
      group = "oxidex-certs";
    };
  };
  tlsAcmeMissing = acmeWith { };
  httpsWithoutCert = evalWith {
    inherit (example) credentials;
    settings = httpsSettings;
  };
  tlsBoth = evalWith {
    inherit (example) credentials;
    settings = httpsSettings;
    tls = {
      certificateFile = "/run/secrets/oxidex/tls.crt";
      keyFile = "/run/secrets/oxidex/tls.key";
      acmeHost = "sso.example.org";
    };
  };
  pgLocalJson = pgLocal.services.oxidex.finalSettings;
  pgRemoteJson = pgRemote.services.oxidex.finalSettings;
  pgRemoteUnit = pgRemote.systemd.services.oxidex;
  anyFailure = config: infix: lib.any (m: lib.hasInfix infix m) (failed config);

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
    "ExecStart serves the generated file from a stable path" =
      lib.hasSuffix "/bin/oxidex serve /etc/oxidex/config.json" sc.ExecStart
      && good.environment.etc."oxidex/config.json".source == good.services.oxidex.configFile;
    "a settings change reloads, a restart-only change restarts" =
      good.systemd.services.oxidex.reloadTriggers == [ good.services.oxidex.configFile ]
      && lib.hasInfix "kill -HUP" sc.ExecReload;
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

    "postgres defaults to the local socket with peer authentication" =
      pgLocalJson.storage == {
        type = "postgres";
        config = {
          host = "/run/postgresql";
          database = "oxidex";
          user = "oxidex";
        };
      };
    "postgres default: module and pure renderer agree" =
      pgLocalJson
      == (import ../nixos-module/render.nix {
        inherit (example) credentials;
        settings = example.settings // {
          storage.type = "postgres";
        };
        inherit credentialsDirectory;
      }).config;
    "postgres default: no assertion fails" = failed pgLocal == [ ];
    "postgres default: the database and its owner are created" =
      pgLocal.services.postgresql.enable
      && pgLocal.services.postgresql.ensureDatabases == [ "oxidex" ]
      # (nixpkgs' submodule adds ensureClauses; only these two matter here)
      && map (u: { inherit (u) name ensureDBOwnership; }) pgLocal.services.postgresql.ensureUsers == [
        {
          name = "oxidex";
          ensureDBOwnership = true;
        }
      ];
    "postgres default: the unit's user is the role" =
      pgLocal.systemd.services.oxidex.serviceConfig.User == "oxidex";
    "postgres default: oxidex starts after the database is set up" =
      lib.elem "postgresql.target" pgLocal.systemd.services.oxidex.after
      && lib.elem "postgresql.target" pgLocal.systemd.services.oxidex.requires;
    "sqlite does not pull in PostgreSQL" =
      !(good.services.postgresql.enable or false) && !(lib.elem "postgresql.target" unit.after);
    "postgres remote: no assertion fails" = failed pgRemote == [ ];
    "postgres remote: the password is a loaded credential" =
      pgRemoteJson.storage.config.passwordFile == "${credentialsDirectory}/postgres-password"
      && lib.elem "postgres-password:/run/secrets/oxidex/postgres-password" pgRemoteUnit.serviceConfig.LoadCredential;
    "postgres remote: typed keys and pass-through keys render" =
      pgRemoteJson.storage.config.host == "db.internal"
      && pgRemoteJson.storage.config.port == 5432
      && pgRemoteJson.storage.config.ssl.mode == "require"
      && pgRemoteJson.storage.config.maxOpenConns == 10;
    "postgres remote: undeclared ssl keys pass through beside the typed mode" =
      pgWithCa.services.oxidex.finalSettings.storage.config.ssl == {
        mode = "verify-full";
        caFile = "/etc/ssl/db-ca.pem";
      };
    "postgres remote: no local server" =
      !(pgRemote.services.postgresql.enable or false) && !(lib.elem "postgresql.target" pgRemoteUnit.after);
    "postgres: an inline password fails an assertion naming the key" =
      anyFailure pgInline "services.oxidex.settings.storage.config.password holds a secret inline";
    "postgres: a password file that is not a credential fails an assertion" =
      anyFailure pgNotCredential "storage.config.passwordFile must name a credential";
    "postgres: TCP without a password fails an assertion" =
      anyFailure pgNoPassword "give the PostgreSQL password as a credential";
    "postgres local: another role than the unit's user fails an assertion" =
      anyFailure pgLocalOtherUser "storage.config.user must be \"oxidex\"";
    "postgres local: a TCP host fails an assertion" =
      anyFailure pgLocalTcp "createLocally uses the local PostgreSQL through its socket directory";

    "https from credentials: no assertion fails" = failed tlsFiles == [ ];
    "https from credentials: the pair is loaded and named in web" =
      lib.elem "tls.crt:/run/secrets/oxidex/tls.crt" tlsFiles.systemd.services.oxidex.serviceConfig.LoadCredential
      && lib.elem "tls.key:/run/secrets/oxidex/tls.key" tlsFiles.systemd.services.oxidex.serviceConfig.LoadCredential
      && tlsFiles.services.oxidex.finalSettings.web == {
        https = "0.0.0.0:5554";
        tlsCert = "${credentialsDirectory}/tls.crt";
        tlsKey = "${credentialsDirectory}/tls.key";
      };
    "https from credentials: the firewall opens the HTTPS port" =
      tlsFiles.networking.firewall.allowedTCPPorts == [ 5554 ];
    "https from ACME: no assertion fails" = failed tlsAcme == [ ];
    "https from ACME: read in place through the certificate's group, after its unit" =
      tlsAcme.services.oxidex.finalSettings.web.tlsCert == "/var/lib/acme/sso.example.org/fullchain.pem"
      && tlsAcme.services.oxidex.finalSettings.web.tlsKey == "/var/lib/acme/sso.example.org/key.pem"
      && tlsAcme.systemd.services.oxidex.serviceConfig.SupplementaryGroups == [ "oxidex-certs" ]
      && !tlsAcme.systemd.services.oxidex.serviceConfig.PrivateUsers
      && lib.elem "acme-sso.example.org.service" tlsAcme.systemd.services.oxidex.wants
      && lib.elem "acme-sso.example.org.service" tlsAcme.systemd.services.oxidex.after;
    "https from ACME: an unknown certificate fails an assertion" =
      anyFailure tlsAcmeMissing "security.acme.certs has no certificate of that name";
    "https without a certificate fails an assertion" =
      anyFailure httpsWithoutCert "settings.web.https needs a certificate";
    "https from credentials and ACME at once fails an assertion" =
      anyFailure tlsBoth "not both";
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
