# Turns the value of `services.oxidex.settings` into the JSON document oxidex reads, and lists
# every problem found on the way. Pure: it needs neither nixpkgs nor a store, so CI can run it
# with plain `nix-instantiate --eval --strict --json` and feed the result to
# `oxidex check-config` (checks/render-contract.sh). The NixOS module calls the same function
# and turns `errors` into assertions.
#
# Arguments:
#   settings              the settings attrset (Dex's schema, JSON-shaped)
#   credentials           attrset name -> source path (only the names matter here)
#   stateDirectory        where the default SQLite database goes
#   credentialsDirectory  where systemd exposes the credentials to the unit
#   serviceUser           the unit's user: with peer authentication, the PostgreSQL role
#   postgresSocketDirectory  where services.postgresql puts its socket (its RuntimeDirectory)
# Result: { config; errors; credentialPaths; }
{
  settings ? { },
  credentials ? { },
  stateDirectory ? "/var/lib/oxidex",
  credentialsDirectory ? "/run/credentials/oxidex.service",
  serviceUser ? "oxidex",
  postgresSocketDirectory ? "/run/postgresql",
}:
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    filter
    genList
    elem
    isAttrs
    isList
    isString
    length
    listToAttrs
    mapAttrs
    stringLength
    substring
    ;

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  hasSuffix =
    suffix: s:
    let
      n = stringLength s;
      m = stringLength suffix;
    in
    n >= m && substring (n - m) m s == suffix;
  concatMap = f: list: concatLists (map f list);
  imap = f: list: genList (i: f i (builtins.elemAt list i)) (length list);
  concatMapAttrs = f: set: concatLists (map (name: f name set.${name}) (attrNames set));
  # a derivation or a store path value is rendered as its path
  isDerivationLike = v: isAttrs v && v ? outPath;

  # Settings win over defaults key by key, down to nested attrsets; lists are replaced whole.
  recursiveUpdate =
    lhs: rhs:
    lhs
    // mapAttrs (
      name: value:
      if isAttrs value && !(isDerivationLike value) && isAttrs (lhs.${name} or null) then
        recursiveUpdate lhs.${name} value
      else
        value
    ) rhs;

  # The module declares the same defaults on its typed options; here they serve callers that
  # pass bare settings. A key set to `null` stays unset (it overrides the default, then goes).
  defaults = {
    web.http = "127.0.0.1:5556";
    storage.type = "sqlite3";
  };
  withDefaults = recursiveUpdate defaults settings;

  # Drop `null`s so typed options without a value leave no trace in the file (JSON null and a
  # missing key mean the same thing to oxidex), and attrsets that only held nulls with them.
  stripNulls =
    v:
    if isDerivationLike v then
      toString v
    else if isAttrs v then
      listToAttrs (
        concatMap (
          name:
          let
            x = v.${name};
            stripped = stripNulls x;
            emptied = isAttrs x && !(isDerivationLike x) && x != { } && stripped == { };
          in
          if x == null || emptied then
            [ ]
          else
            [
              {
                inherit name;
                value = stripped;
              }
            ]
        ) (attrNames v)
      )
    else if isList v then
      map stripNulls (filter (x: x != null) v)
    else
      v;

  cleaned = stripNulls withDefaults;

  storage =
    let
      given = cleaned.storage;
      givenConfig = given.config or { };
    in
    if given.type == "sqlite3" then
      given
      // {
        config = {
          file = "${stateDirectory}/oxidex.db";
        }
        // givenConfig;
      }
    else if given.type == "postgres" then
      given
      // {
        # PostgreSQL on this host through its Unix socket, peer authentication: the unit's
        # user is the role, and owns the database of the same name.
        config = {
          host = postgresSocketDirectory;
          database = serviceUser;
          user = serviceUser;
        }
        // givenConfig;
      }
    else
      given;

  config = cleaned // {
    inherit storage;
  };

  # ---- checks -------------------------------------------------------------------------------

  isStorePath = v: isString v && hasPrefix "/nix/store/" v;
  isEnvReference = v: isString v && hasPrefix "$" v;

  credentialNames = attrNames credentials;
  # A string naming a file in the credentials directory, or `$CREDENTIALS_DIRECTORY/<name>`.
  credentialOf =
    v:
    if !isString v then
      null
    else if hasPrefix "${credentialsDirectory}/" v then
      substring (stringLength credentialsDirectory + 1) (stringLength v) v
    else if hasPrefix "$CREDENTIALS_DIRECTORY/" v then
      substring 23 (stringLength v) v
    else if hasPrefix "\${CREDENTIALS_DIRECTORY}/" v then
      substring 25 (stringLength v) v
    else
      null;

  # Every string in the document that points into the credentials directory must name a
  # credential the unit actually loads.
  collectCredentialRefs =
    path: v:
    if isAttrs v && !(isDerivationLike v) then
      concatMapAttrs (k: x: collectCredentialRefs "${path}.${k}" x) v
    else if isList v then
      concatLists (imap (i: x: collectCredentialRefs "${path}[${toString i}]" x) v)
    else
      let
        name = credentialOf v;
      in
      if name == null then [ ] else [ { inherit path name; } ];

  credentialRefs = collectCredentialRefs "settings" config;
  danglingCredentialErrors = map (
    r:
    "services.oxidex.${r.path} refers to the credential \"${r.name}\", but services.oxidex.credentials has no entry of that name (declared: ${
      if credentialNames == [ ] then "none" else concatStringsSep ", " credentialNames
    })."
  ) (filter (r: !(elem r.name credentialNames)) credentialRefs);

  inlineSecretMessage =
    path: fileForm:
    "services.oxidex.${path} holds a secret inline; the generated configuration lives in the world-readable /nix/store and oxidex refuses it. Put the secret in a file, add it to services.oxidex.credentials.<name>, and set services.oxidex.${fileForm} = \"${credentialsDirectory}/<name>\" instead.";

  storeFileMessage =
    path:
    "services.oxidex.${path} points into /nix/store, which is world-readable; keep secret files outside the store and pass them with services.oxidex.credentials.";

  # `<key>File` values anywhere in an attrset must not live in the store.
  fileFormErrors =
    path: set:
    concatMapAttrs (
      k: v: if hasSuffix "File" k && isStorePath v then [ (storeFileMessage "${path}.${k}") ] else [ ]
    ) set;

  clientErrors = concatLists (
    imap (
      i: c:
      let
        path = "settings.staticClients[${toString i}]";
      in
      (if c ? id then [ ] else [ "services.oxidex.${path}.id must be set." ])
      ++ (
        if (c.secret or null) != null then [ (inlineSecretMessage "${path}.secret" "${path}.secretFile") ] else [ ]
      )
      ++ (
        if (c.public or false) || (c.redirectURIs or [ ]) != [ ] then
          [ ]
        else
          [
            "services.oxidex.${path}.redirectURIs is empty; a confidential client needs at least one redirect URI."
          ]
      )
      ++ fileFormErrors path c
    ) (config.staticClients or [ ])
  );

  # Keys of connector configs that carry secrets in Dex's connectors.
  connectorSecretKeys = [
    "clientSecret"
    "bindPW"
    "password"
    "privateKey"
    "token"
  ];
  connectorErrors = concatLists (
    imap (
      i: c:
      let
        path = "settings.connectors[${toString i}]";
        cc = c.config or { };
      in
      (if c ? type then [ ] else [ "services.oxidex.${path}.type must be set." ])
      ++ (if c ? id then [ ] else [ "services.oxidex.${path}.id must be set." ])
      ++ concatMap (
        k:
        if cc ? ${k} && isString cc.${k} && !(isEnvReference cc.${k}) then
          [ (inlineSecretMessage "${path}.config.${k}" "${path}.config.${k}File") ]
        else
          [ ]
      ) connectorSecretKeys
      ++ fileFormErrors "${path}.config" cc
    ) (config.connectors or [ ])
  );
  passwordErrors = concatLists (
    imap (
      i: p:
      let
        path = "settings.staticPasswords[${toString i}]";
      in
      (if (p.hash or null) != null then [ (inlineSecretMessage "${path}.hash" "${path}.hashFile") ] else [ ])
      ++ fileFormErrors path p
    ) (config.staticPasswords or [ ])
  );

  storageErrors =
    let
      sc = config.storage.config or { };
    in
    (
      if sc ? password && isString sc.password && !(isEnvReference sc.password) then
        [ (inlineSecretMessage "settings.storage.config.password" "settings.storage.config.passwordFile") ]
      else
        [ ]
    )
    ++ fileFormErrors "settings.storage.config" sc
    ++ (
      # The unit runs as a dynamic user, which can read a secret file only as a credential.
      if config.storage.type == "postgres" && sc ? passwordFile && credentialOf sc.passwordFile == null then
        [
          "services.oxidex.settings.storage.config.passwordFile must name a credential the unit loads: set services.oxidex.credentials.<name> = <path of the password file> and services.oxidex.settings.storage.config.passwordFile = \"${credentialsDirectory}/<name>\" (got ${builtins.toJSON sc.passwordFile})."
        ]
      else
        [ ]
    );

  webErrors =
    if isStorePath (config.web.tlsKey or null) then [ (storeFileMessage "settings.web.tlsKey") ] else [ ];

  grpcErrors =
    if isStorePath ((config.grpc or { }).tlsKey or null) then
      [ (storeFileMessage "settings.grpc.tlsKey") ]
    else
      [ ];

  issuerErrors =
    if !(config ? issuer) then
      [ "services.oxidex.settings.issuer must be set to the public URL of oxidex, e.g. \"https://sso.example.org\"." ]
    else if
      !(isString config.issuer && (hasPrefix "https://" config.issuer || hasPrefix "http://" config.issuer))
    then
      [ "services.oxidex.settings.issuer must be an http:// or https:// URL (got ${builtins.toJSON config.issuer})." ]
    else
      [ ];

  credentialSourceErrors = concatMap (
    n:
    if isStorePath (toString credentials.${n}) then
      [
        "services.oxidex.credentials.${n} points into /nix/store, which is world-readable; use a path outside the store (for example one managed by agenix, sops-nix or systemd-creds)."
      ]
    else
      [ ]
  ) credentialNames;
in
{
  inherit config;
  errors =
    issuerErrors
    ++ clientErrors
    ++ connectorErrors
    ++ passwordErrors
    ++ storageErrors
    ++ webErrors
    ++ grpcErrors
    ++ danglingCredentialErrors
    ++ credentialSourceErrors;
  credentialPaths = map (r: r.path) credentialRefs;
}
