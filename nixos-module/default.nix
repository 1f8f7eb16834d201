{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.oxidex;
  opt = "services.oxidex";

  inherit (lib)
    literalExpression
    literalMD
    mkEnableOption
    mkIf
    mkOption
    types
    ;

  # A secret's path is read at run time, so it must not be in the world-readable store;
  # a string (not a Nix path value, which would be copied into the store).
  secretPath = types.pathWith {
    inStore = false;
    absolute = true;
  };

  settingsFormat = pkgs.formats.json { };

  stateDirectory = "/var/lib/oxidex";
  credentialsDirectory = "/run/credentials/oxidex.service";
  # Named, although the user is dynamic, so that it can be the PostgreSQL role under peer
  # authentication (PostgreSQL resolves the peer's uid through NSS, nss-systemd knows it).
  serviceUser = "oxidex";
  postgresSocketDirectory = "/run/postgresql";

  # The credentials systemd loads: the declared ones and the HTTPS pair.
  credentials =
    cfg.credentials
    // lib.optionalAttrs tlsFromFiles {
      "tls.crt" = cfg.tls.certificateFile;
      "tls.key" = cfg.tls.keyFile;
    };

  rendered = import ./render.nix {
    inherit (cfg) settings;
    inherit credentials;
    inherit
      stateDirectory
      credentialsDirectory
      serviceUser
      postgresSocketDirectory
      ;
  };

  isSqlite = cfg.settings.storage.type == "sqlite3";
  isPostgres = cfg.settings.storage.type == "postgres";
  pgConfig = rendered.config.storage.config;
  createPostgres = isPostgres && cfg.database.createLocally;
  configFile = settingsFormat.generate "oxidex.json" rendered.config;
  # The service reads its config from a stable path, so a change of the settings
  # can reload it (SIGHUP) instead of restarting it.
  configPath = "/etc/oxidex/config.json";
  # What oxidex only changes with a restart (a reload refuses these): when they
  # change, the unit restarts; any other change reloads it.
  restartOnly = {
    inherit (rendered.config) issuer storage web;
    telemetry = rendered.config.telemetry or null;
    signer = rendered.config.signer or null;
    idTokens = rendered.config.expiry.idTokens or null;
    logFormat = rendered.config.logger.format or null;
    gc = rendered.config.gc or null;
    grpc = rendered.config.grpc or null;
  };

  # "host:port", "[::]:port" or ":port" -> port
  portOf = address: lib.toInt (lib.last (lib.splitString ":" address));
  listenPorts = map portOf (
    lib.filter (a: a != null) [
      cfg.settings.web.http
      cfg.settings.web.https
    ]
  );
  grpcPorts = lib.optional (cfg.settings.grpc.addr != null) (portOf cfg.settings.grpc.addr);
  bindsPrivilegedPort = lib.any (p: p < 1024) (listenPorts ++ grpcPorts);

  # HTTPS: the pair as credentials (copied when the unit starts), or read in place from an
  # ACME certificate's directory (group-readable), where oxidex notices each renewal itself.
  tlsFromFiles = cfg.tls.certificateFile != null || cfg.tls.keyFile != null;
  acmeHost = cfg.tls.acmeHost;
  acmeCert = if acmeHost == null then null else config.security.acme.certs.${acmeHost} or null;
  acmeDirectory = if acmeCert == null then "/var/lib/acme/${toString acmeHost}" else acmeCert.directory;
  acmeGroup = if acmeCert == null then "acme" else acmeCert.group;
  tlsSettings =
    if acmeHost != null then
      {
        tlsCert = "${acmeDirectory}/fullchain.pem";
        tlsKey = "${acmeDirectory}/key.pem";
      }
    else if tlsFromFiles then
      {
        tlsCert = "${credentialsDirectory}/tls.crt";
        tlsKey = "${credentialsDirectory}/tls.key";
      }
    else
      { };

  # Freeform JSON with a few declared keys: typed, documented, with defaults.
  jsonSubmodule = options: types.submodule { freeformType = settingsFormat.type; inherit options; };

  staticClientType = jsonSubmodule {
    id = mkOption {
      type = types.str;
      example = "grafana";
      description = "Client ID the application presents to oxidex.";
    };
    name = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "Grafana";
      description = "Display name shown on the approval page.";
    };
    redirectURIs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "https://grafana.example.org/login/generic_oauth"
        "http://localhost:3000/login/generic_oauth"
      ];
      description = "Redirect URIs the client may use; each is matched exactly.";
    };
    public = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = "Whether the client is public (no secret, PKCE instead). Left out of the file when `null`.";
    };
    secretFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "${credentialsDirectory}/grafana-client-secret";
      description = ''
        File holding the client secret, read by oxidex at start. Point it at a credential:
        `"${credentialsDirectory}/<name>"` together with
        {option}`${opt}.credentials.<name>`. An inline `secret` is rejected by an assertion.
      '';
    };
  };

  connectorType = jsonSubmodule {
    type = mkOption {
      type = types.str;
      example = "gitea";
      description = "Connector type, as in Dex (`gitea` for Forgejo and Gitea, `oidc`, …).";
    };
    id = mkOption {
      type = types.str;
      example = "forgejo";
      description = "Connector ID. It is part of every user's `sub` claim, so never change it once users logged in.";
    };
    name = mkOption {
      type = types.str;
      example = "Forgejo";
      description = "Name shown on the login page.";
    };
    config = mkOption {
      type = settingsFormat.type;
      default = { };
      example = literalExpression ''
        {
          baseURL = "https://git.example.org";
          clientIDFile = "${credentialsDirectory}/forgejo-client-id";
          clientSecretFile = "${credentialsDirectory}/forgejo-client-secret";
          redirectURI = "https://sso.example.org/callback";
          loadAllGroups = true;
        }
      '';
      description = ''
        Connector configuration in Dex's format. Every string key also has a file form
        (`<key>File`, e.g. `clientSecretFile`), and `$VARIABLE` references are expanded from the
        environment (see {option}`${opt}.environmentFile`).
      '';
    };
  };
in
{
  # The same module reached twice (the flake's `nixosModules.oxidex` and `.default`, or
  # that and this file by path) is imported once instead of declaring every option twice.
  key = toString ./default.nix;
  _file = toString ./default.nix;

  options.services.oxidex = {
    enable = mkEnableOption "oxidex, a Dex-compatible OpenID Connect identity provider";

    package = mkOption {
      type = types.package;
      # Built with the system's own package set, so its overlays and cross-compilation
      # settings apply.
      default = pkgs.callPackage ../package.nix { };
      defaultText = literalMD "oxidex built from this source with `pkgs.callPackage ./package.nix { }`";
      example = literalExpression "pkgs.oxidex";
      description = "The oxidex package to run.";
    };

    settings = mkOption {
      default = { };
      description = ''
        Configuration of oxidex, written as JSON to the Nix store. The schema is Dex's
        (`issuer`, `storage`, `web`, `telemetry`, `oauth2`, `expiry`, `logger`, `staticClients`,
        `connectors`, …); keys not declared here are passed through unchanged.

        Secrets never belong here: the file is world-readable. Use the file forms
        (`secretFile`, `clientSecretFile`, `hashFile`, `<key>File` inside a connector's
        `config`) pointing at {option}`${opt}.credentials`, or `$VARIABLE` references inside
        connector and storage configs together with {option}`${opt}.environmentFile`.
      '';
      example = literalExpression ''
        {
          issuer = "https://sso.example.org";
          web.http = "127.0.0.1:5556";
          staticClients = [
            {
              id = "grafana";
              name = "Grafana";
              redirectURIs = [ "https://grafana.example.org/login/generic_oauth" ];
              secretFile = "/run/credentials/oxidex.service/grafana-client-secret";
            }
          ];
        }
      '';
      type = jsonSubmodule {
        issuer = mkOption {
          type = types.str;
          example = "https://sso.example.org";
          description = ''
            Public URL of oxidex; every endpoint lives under its path and it is the `iss` of
            every token. Clients compare it byte for byte, so mind trailing slashes.
          '';
        };

        web = {
          http = mkOption {
            type = types.nullOr types.str;
            default = "127.0.0.1:5556";
            example = "0.0.0.0:5556";
            description = "Address for plain HTTP, as `host:port`; `null` disables it.";
          };
          https = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "0.0.0.0:5554";
            description = ''
              Address for HTTPS, as `host:port`; `null` disables it. The certificate comes from
              {option}`${opt}.tls` (or `web.tlsCert`/`web.tlsKey` set here by hand).
            '';
          };
        };

        telemetry.http = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "127.0.0.1:5558";
          description = "Address of the telemetry listener (`/metrics`, `/healthz/live`, `/healthz/ready`).";
        };

        grpc.addr = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "127.0.0.1:5557";
          description = ''
            Address of Dex's gRPC admin API (its own port; `null` disables it). Anyone who can
            reach it is an administrator unless mutual TLS is on: give the certificate, key and
            client CA as credentials, e.g. `grpc.tlsCert = "''${credentialsDirectory}/grpc.crt"`,
            `grpc.tlsKey = "''${credentialsDirectory}/grpc.key"`,
            `grpc.tlsClientCA = "''${credentialsDirectory}/grpc-client-ca.crt"` with
            {option}`${opt}.credentials` naming the files. {option}`${opt}.openFirewall` does not
            open this port.
          '';
        };

        storage = {
          type = mkOption {
            type = types.enum [
              "sqlite3"
              "postgres"
              "memory"
            ];
            default = "sqlite3";
            description = ''
              Storage backend. `postgres` lets several replicas share one database; with the
              defaults it uses PostgreSQL on this host (see {option}`${opt}.database.createLocally`).
              `memory` loses every session and refresh token on restart.
            '';
          };
          config = mkOption {
            type = jsonSubmodule {
              file = mkOption {
                type = types.nullOr types.str;
                default = if isSqlite then "${stateDirectory}/oxidex.db" else null;
                defaultText = literalMD "`${stateDirectory}/oxidex.db` for `sqlite3`, otherwise `null`";
                description = "SQLite database file. The default lies in the unit's `StateDirectory`, the only writable place.";
              };
              host = mkOption {
                type = types.nullOr types.str;
                default = if isPostgres then postgresSocketDirectory else null;
                defaultText = literalMD "`${postgresSocketDirectory}` (the local server's socket directory) for `postgres`, otherwise `null`";
                example = "db.internal";
                description = ''
                  PostgreSQL server: a host name or address (`host:port` and `[v6]:port` work
                  too), or the directory of a Unix socket (a path starting with `/`).
                '';
              };
              port = mkOption {
                type = types.nullOr types.port;
                default = null;
                description = "PostgreSQL port; oxidex's default (5432) when `null`. Also names the socket file in a socket directory.";
              };
              database = mkOption {
                type = types.nullOr types.str;
                default = if isPostgres then serviceUser else null;
                defaultText = literalMD "`${serviceUser}` for `postgres`, otherwise `null`";
                description = "PostgreSQL database. oxidex creates and migrates its tables in it at start.";
              };
              user = mkOption {
                type = types.nullOr types.str;
                default = if isPostgres then serviceUser else null;
                defaultText = literalMD "`${serviceUser}` (the unit's user, as peer authentication needs) for `postgres`, otherwise `null`";
                description = "PostgreSQL role.";
              };
              passwordFile = mkOption {
                type = types.nullOr types.str;
                default = null;
                example = "${credentialsDirectory}/postgres-password";
                description = ''
                  File holding the PostgreSQL password (scram-sha-256 over TCP). It must be a
                  credential: `"${credentialsDirectory}/<name>"` together with
                  {option}`${opt}.credentials.<name>`. Not needed with peer authentication over the
                  local socket. An inline `password` is rejected by an assertion (a
                  `$VARIABLE` from {option}`${opt}.environmentFile` is accepted).
                '';
              };
              ssl.mode = mkOption {
                type = types.nullOr (
                  types.enum [
                    "disable"
                    "require"
                    "verify-ca"
                    "verify-full"
                  ]
                );
                default = null;
                description = "TLS to PostgreSQL over TCP; Dex's default (`verify-full`) when `null`. A socket never uses TLS.";
              };
            };
            default = { };
            description = "Backend configuration, in Dex's keys; undeclared keys (e.g. `maxOpenConns`, `ssl.caFile`) pass through.";
          };
        };

        logger = {
          level = mkOption {
            type = types.nullOr (
              types.enum [
                "debug"
                "info"
                "warn"
                "error"
              ]
            );
            default = null;
            description = "Log level; oxidex's default (`info`) when `null`.";
          };
          format = mkOption {
            type = types.nullOr (
              types.enum [
                "text"
                "json"
              ]
            );
            default = null;
            description = "Log format; oxidex's default (`text`) when `null`.";
          };
        };

        staticClients = mkOption {
          type = types.listOf staticClientType;
          default = [ ];
          description = "OAuth2 clients (the applications that log users in through oxidex).";
        };

        connectors = mkOption {
          type = types.listOf connectorType;
          default = [ ];
          description = "Upstream identity providers.";
        };
      };
    };

    tls = {
      certificateFile = mkOption {
        type = types.nullOr secretPath;
        default = null;
        example = "/run/secrets/oxidex/tls.crt";
        description = ''
          PEM certificate chain (leaf first) for {option}`${opt}.settings.web.https`, handed to
          oxidex with `LoadCredential=` as `${credentialsDirectory}/tls.crt` (it becomes
          `web.tlsCert`), whatever the owner and mode of the source. systemd copies credentials
          when the unit starts, so restart the unit after replacing the file.
        '';
      };
      keyFile = mkOption {
        type = types.nullOr secretPath;
        default = null;
        example = "/run/secrets/oxidex/tls.key";
        description = ''
          PEM private key of {option}`${opt}.tls.certificateFile`, loaded as the credential
          `${credentialsDirectory}/tls.key` (it becomes `web.tlsKey`).
        '';
      };
      acmeHost = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "sso.example.org";
        description = ''
          Serve HTTPS with the certificate {option}`security.acme.certs.<name>` of this name:
          oxidex reads `fullchain.pem` and `key.pem` in its directory (the unit joins the
          certificate's group) and serves each renewal to new connections within 5 s, without
          a restart or a dropped connection. Give the certificate `reloadServices` no entry
          for oxidex: nothing needs to be done.
        '';
      };
    };

    credentials = mkOption {
      type = types.attrsOf secretPath;
      default = { };
      example = {
        forgejo-client-secret = "/run/secrets/oxidex/forgejo-client-secret";
        grafana-client-secret = "/run/secrets/oxidex/grafana-client-secret";
      };
      description = ''
        Secret files handed to oxidex with systemd's `LoadCredential=`: each entry
        `<name> = <path>` makes the file readable by the (dynamic) service user as
        `${credentialsDirectory}/<name>`, whatever the owner and mode of the source file.
        Refer to it from {option}`${opt}.settings` through a file form, e.g.
        `clientSecretFile = "${credentialsDirectory}/<name>"`. The source is an absolute path
        outside the Nix store, written as a string (a Nix path value would be copied into
        the world-readable store).
      '';
    };

    credentialsDirectory = mkOption {
      type = types.str;
      default = credentialsDirectory;
      readOnly = true;
      description = ''
        Where the unit sees its credentials; use it to build file forms in settings:
        `"''${config.${opt}.credentialsDirectory}/grafana-client-secret"`.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr secretPath;
      default = null;
      example = "/run/secrets/oxidex.env";
      description = ''
        Environment file (see {manpage}`systemd.exec(5)`, `EnvironmentFile=`) read by systemd
        as root. Its variables are expanded where oxidex expands `$VARIABLE`: inside
        `connectors[].config` and `storage.config`; static clients take `secretEnv`.
      '';
    };

    database.createLocally = mkOption {
      type = types.bool;
      default = true;
      description = ''
        With `postgres` storage: run PostgreSQL on this host ({option}`services.postgresql`),
        create the database and its owner role, and start oxidex after it. oxidex reaches it
        through the Unix socket in `${postgresSocketDirectory}` with peer authentication, so no
        password is involved; the role and the database are named after the unit's user
        (`${serviceUser}`). Set to `false` for a server elsewhere (then set
        {option}`${opt}.settings.storage.config.host` and a `passwordFile`).
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open the ports of `settings.web.http` and `settings.web.https` in the firewall.";
    };

    finalSettings = mkOption {
      type = types.unspecified;
      readOnly = true;
      internal = true;
      description = "The JSON document written to the store (for tests and inspection).";
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      internal = true;
      description = "The generated configuration file.";
    };
  };

  config = mkIf cfg.enable {
    services.oxidex.settings.web = tlsSettings;
    services.oxidex.finalSettings = rendered.config;
    services.oxidex.configFile = configFile;
    environment.etc."oxidex/config.json".source = configFile;

    assertions =
      map (message: {
        assertion = false;
        inherit message;
      }) rendered.errors
      ++ lib.optionals createPostgres [
        {
          assertion = pgConfig.host == postgresSocketDirectory;
          message = "${opt}.database.createLocally uses the local PostgreSQL through its socket directory, but ${opt}.settings.storage.config.host is ${builtins.toJSON pgConfig.host}; set it to \"${postgresSocketDirectory}\" or set ${opt}.database.createLocally = false for a server elsewhere.";
        }
        {
          assertion = pgConfig.user == serviceUser;
          message = "${opt}.database.createLocally authenticates by peer (the unit's user is the role), so ${opt}.settings.storage.config.user must be \"${serviceUser}\" (got ${builtins.toJSON pgConfig.user}).";
        }
        {
          assertion = pgConfig.database == pgConfig.user;
          message = "${opt}.database.createLocally makes the role own the database of its own name (services.postgresql.ensureDBOwnership), so ${opt}.settings.storage.config.database must be ${builtins.toJSON pgConfig.user} (got ${builtins.toJSON pgConfig.database}).";
        }
      ]
      ++ [
        {
          assertion = !(tlsFromFiles && acmeHost != null);
          message = "${opt}.tls: set either certificateFile and keyFile or acmeHost, not both.";
        }
        {
          assertion = tlsFromFiles -> (cfg.tls.certificateFile != null && cfg.tls.keyFile != null);
          message = "${opt}.tls: certificateFile and keyFile go together.";
        }
        {
          assertion = tlsFromFiles -> !(cfg.credentials ? "tls.crt" || cfg.credentials ? "tls.key");
          message = "${opt}.tls.certificateFile and keyFile are loaded as the credentials tls.crt and tls.key: rename those entries of ${opt}.credentials.";
        }
        {
          assertion = acmeHost != null -> acmeCert != null;
          message = "${opt}.tls.acmeHost is ${builtins.toJSON acmeHost}, but security.acme.certs has no certificate of that name.";
        }
        {
          assertion = (tlsFromFiles || acmeHost != null) -> cfg.settings.web.https != null;
          message = "${opt}.tls is set but ${opt}.settings.web.https is null: give HTTPS an address, e.g. \"0.0.0.0:5554\".";
        }
        {
          assertion = cfg.settings.web.https != null -> (rendered.config.web ? tlsCert && rendered.config.web ? tlsKey);
          message = "${opt}.settings.web.https needs a certificate: set ${opt}.tls.certificateFile and keyFile (credentials) or ${opt}.tls.acmeHost.";
        }
      ]
      ++ lib.optional (isPostgres && !cfg.database.createLocally) {
        # Over TCP there is no peer authentication; without one of these the connection can
        # only fail at start.
        assertion =
          lib.hasPrefix "/" pgConfig.host
          || pgConfig ? passwordFile
          || lib.hasPrefix "$" (pgConfig.password or "")
          || (pgConfig.ssl.certFile or null) != null;
        message = "${opt}.settings.storage.config.host is ${builtins.toJSON pgConfig.host} (TCP): give the PostgreSQL password as a credential (${opt}.credentials.<name> = <path>, ${opt}.settings.storage.config.passwordFile = \"${credentialsDirectory}/<name>\"), as a $VARIABLE from ${opt}.environmentFile, or a client certificate (ssl.certFile, ssl.keyFile).";
      };

    services.postgresql = mkIf createPostgres {
      enable = true;
      ensureDatabases = [ pgConfig.database ];
      ensureUsers = [
        {
          name = pgConfig.user;
          ensureDBOwnership = true;
        }
      ];
    };

    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall listenPorts;

    systemd.services.oxidex = {
      description = "oxidex OpenID Connect identity provider";
      wantedBy = [ "multi-user.target" ];
      # postgresql.target is reached once the server answers and postgresql-setup.service
      # has created the role and the database. A server on this host that the module does
      # not manage still goes first.
      after = [
        "network.target"
      ]
      ++ lib.optional (createPostgres || (isPostgres && config.services.postgresql.enable)) "postgresql.target"
      # The certificate exists (self-signed until the first order succeeds) once it ran.
      ++ lib.optional (acmeHost != null) "acme-${acmeHost}.service";
      wants = lib.optional (acmeHost != null) "acme-${acmeHost}.service";
      requires = lib.optional createPostgres "postgresql.target";
      restartTriggers = [
        (builtins.toJSON restartOnly)
      ]
      ++ lib.optional (cfg.environmentFile != null) cfg.environmentFile;
      reloadTriggers = [ configFile ];

      serviceConfig = {
        Type = "exec";
        ExecStart = "${lib.getExe cfg.package} serve ${configPath}";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "5s";

        DynamicUser = true;
        User = serviceUser;
        StateDirectory = "oxidex";
        StateDirectoryMode = "0700";
        RuntimeDirectory = "oxidex";
        RuntimeDirectoryMode = "0700";
        WorkingDirectory = stateDirectory;
        LoadCredential = lib.mapAttrsToList (name: path: "${name}:${toString path}") credentials;
        UMask = "0077";
        # Every open connection holds a descriptor: with the default soft limit (1024) a
        # thousand idle or slow clients lock everyone else out.
        LimitNOFILE = 65536;

        # Only when a port below 1024 is configured; PrivateUsers would drop the capability.
        AmbientCapabilities = if bindsPrivilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        CapabilityBoundingSet = if bindsPrivilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        # The ACME directory is readable through its group, which a private user namespace
        # would not map.
        PrivateUsers = !bindsPrivilegedPort && acmeHost == null;

        # ProtectClock= would otherwise add DeviceAllow=char-rtc r
        DeviceAllow = "";
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        NoNewPrivileges = true;
        PrivateDevices = true;
        PrivateMounts = true;
        PrivateTmp = true;
        ProcSubset = "pid";
        ProtectClock = true;
        ProtectControlGroups = true;
        ProtectHome = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectProc = "invisible";
        ProtectSystem = "strict";
        RemoveIPC = true;
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        SystemCallArchitectures = "native";
        SystemCallErrorNumber = "EPERM";
        SystemCallFilter = [
          "@system-service"
          "~@privileged @resources @setuid @keyring"
        ];
      }
      // lib.optionalAttrs (cfg.environmentFile != null) {
        EnvironmentFile = cfg.environmentFile;
      }
      // lib.optionalAttrs (acmeHost != null) {
        SupplementaryGroups = [ acmeGroup ];
      };
    };
  };
}
