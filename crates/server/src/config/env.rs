//! The environment layer: `TIDINGS_<KEY>` for every setting (`__` between nested keys), plus
//! the short names earlier versions read.

use figment::providers::Env;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

use super::Config;
use super::load::Override;

/// Prefix of every variable that sets a setting.
pub const ENV_PREFIX: &str = "TIDINGS_";

/// A variable kept from earlier versions, and the setting it sets. Its value is taken as
/// it is (a secret of digits stays a string), where `TIDINGS_<KEY>` values are parsed
/// (`42` is a number, `true` a boolean).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvAlias {
    /// The variable (`TIDINGS_JWT_SECRET`).
    pub variable: &'static str,
    /// The setting, as a dotted TOML path (`jwt.secret`).
    pub key: &'static str,
    /// The value is a comma-separated list (`a,b`).
    pub list: bool,
}

const fn alias(variable: &'static str, key: &'static str) -> EnvAlias {
    EnvAlias {
        variable,
        key,
        list: false,
    }
}

/// Variables kept from earlier versions. Each beats the `TIDINGS_<KEY>` spelling of the same
/// setting.
pub const ENV_ALIASES: &[EnvAlias] = &[
    alias("TIDINGS_BIND", "bind"),
    alias("TIDINGS_JWT_SECRET", "jwt.secret"),
    alias("TIDINGS_JWT_PUBLIC_KEY", "jwt.public_key_pem_file"),
    alias("TIDINGS_API_KEY", "api_key"),
    EnvAlias {
        variable: "TIDINGS_ALLOWED_ORIGINS",
        key: "allowed_origins",
        list: true,
    },
    alias("TIDINGS_DATA_DIR", "storage.data_dir"),
    alias("DATABASE_URL", "storage.database_url"),
];

/// `TIDINGS_*` variables that are not settings but are known: the file's path, read by the
/// binary.
const NOT_SETTINGS: &[&str] = &[
    "TIDINGS_CONFIG",
    // The server's URL, read by the back-end SDKs (sdk/python) running beside the binary.
    "TIDINGS_URL",
];

/// `figment` with the environment merged on top.
pub(super) fn merge(figment: Figment) -> Figment {
    let figment = figment.merge(Prefixed);
    ENV_ALIASES.iter().fold(figment, |figment, alias| {
        match std::env::var(alias.variable) {
            Ok(text) if !text.is_empty() => figment.merge(Override::new(
                alias.variable,
                alias.key,
                alias_value(alias, &text),
            )),
            _ => figment,
        }
    })
}

fn alias_value(alias: &EnvAlias, text: &str) -> Value {
    if alias.list {
        let items: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect();
        Value::from(items)
    } else {
        Value::from(text.to_owned())
    }
}

/// `TIDINGS_<KEY>` variables whose first key is a setting. Others (a test harness's
/// `TIDINGS_BIN`, say) are left alone rather than refused: see [`ignored_env_vars`].
struct Prefixed;

impl Prefixed {
    fn env() -> Env {
        Env::prefixed(ENV_PREFIX)
            .filter(|key| {
                let first = key.as_str().split("__").next().unwrap_or_default();
                is_setting(first) && !is_alias(key.as_str())
            })
            .split("__")
    }
}

impl Provider for Prefixed {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment").interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Prefixed::env().data()
    }
}

/// Whether `key` (after the prefix, any case) is a top-level field of [`Config`].
fn is_setting(key: &str) -> bool {
    config_fields()
        .iter()
        .any(|field| field.eq_ignore_ascii_case(key))
}

fn is_alias(key_after_prefix: &str) -> bool {
    ENV_ALIASES.iter().any(|alias| {
        alias
            .variable
            .strip_prefix(ENV_PREFIX)
            .is_some_and(|name| name.eq_ignore_ascii_case(key_after_prefix))
    })
}

/// `TIDINGS_*` variables that set nothing (a misspelt setting, or another program's
/// variable), for the binary to warn about: a typo should not pass in silence.
pub fn ignored_env_vars() -> Vec<String> {
    let mut ignored: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
        })
        .filter(|name| !NOT_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .filter(|name| {
            let rest = name.get(ENV_PREFIX.len()..).unwrap_or_default();
            let first = rest.split("__").next().unwrap_or_default();
            !is_setting(first) && !is_alias(rest)
        })
        .collect();
    ignored.sort();
    ignored
}

/// The top-level field names of [`Config`], from its `Deserialize` impl, so that this list
/// cannot drift from the struct.
fn config_fields() -> &'static [&'static str] {
    static FIELDS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut fields: &'static [&'static str] = &[];
        let _ = Config::deserialize(FieldProbe(&mut fields));
        fields
    })
}

/// A deserializer that only records the field list serde's derive passes to
/// `deserialize_struct`, then stops.
struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("field probe"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field probe"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::result_large_err)]

    use std::path::Path;
    use std::time::Duration;

    use figment::Jail;

    use super::*;

    #[test]
    fn the_probe_sees_every_field() {
        let fields = config_fields();
        for name in [
            "bind",
            "limits",
            "heartbeat",
            "storage",
            "policy",
            "webhook_delivery",
        ] {
            assert!(fields.contains(&name), "{name} missing from {fields:?}");
        }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "tidings.toml",
                "bind = \"127.0.0.1:1\"\nheartbeat = \"5s\"\nhistory_size = 7\n\
                 [limits]\nmax_frame_bytes = 1000\nrate_burst = 3\n",
            )?;
            jail.set_env("TIDINGS_BIND", "127.0.0.1:2");
            jail.set_env("TIDINGS_LIMITS__MAX_FRAME_BYTES", "2000");
            jail.set_env("TIDINGS_HEARTBEAT", "6s");
            let figment = Config::figment(Some(Path::new("tidings.toml"))).merge(Override::new(
                "--bind",
                "bind",
                "127.0.0.1:3",
            ));
            let config = Config::from_figment(&figment).unwrap();
            assert_eq!(config.bind, "127.0.0.1:3"); // flag > env > file
            assert_eq!(config.heartbeat, Duration::from_secs(6)); // env > file
            assert_eq!(config.limits.max_frame_bytes, 2000); // nested env > file
            assert_eq!(config.limits.rate_burst, 3); // file > default
            assert_eq!(config.history_size, 7);
            assert_eq!(config.limits.rate_per_second, 50); // default
            Ok(())
        });
    }

    #[test]
    fn earlier_variable_names_still_work_and_stay_strings() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TIDINGS_JWT_SECRET", "12345");
            jail.set_env("TIDINGS_API_KEY", "true");
            jail.set_env(
                "TIDINGS_ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            );
            jail.set_env("TIDINGS_DATA_DIR", "/var/lib/tidings");
            jail.set_env("DATABASE_URL", "postgres://localhost/x");
            jail.set_env("TIDINGS_JWT_PUBLIC_KEY", "/etc/key.pem");
            jail.set_env("TIDINGS_JWT__SECRET", "loses-to-the-alias");
            let config = Config::from_figment(&Config::figment(None)).unwrap();
            assert_eq!(config.jwt.secret.as_deref(), Some("12345"));
            assert_eq!(config.api_key.as_deref(), Some("true"));
            assert_eq!(
                config.allowed_origins,
                ["https://a.example", "https://b.example"]
            );
            assert_eq!(config.storage.data_dir, Path::new("/var/lib/tidings"));
            let url = config.storage.database_url.as_deref();
            assert_eq!(url, Some("postgres://localhost/x"));
            let key = config.jwt.public_key_pem_file.as_deref();
            assert_eq!(key, Some("/etc/key.pem"));
            Ok(())
        });
    }

    #[test]
    fn other_programs_variables_are_ignored_and_listed() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TIDINGS_BIN", "/usr/bin/tidings");
            jail.set_env("TIDINGS_CONFIG", "tidings.toml");
            jail.set_env("TIDINGS_HEARTBEET", "1s");
            jail.set_env("TIDINGS_API_KEY", "k");
            let config = Config::from_figment(&Config::figment(None)).unwrap();
            assert_eq!(config.heartbeat, Config::default().heartbeat);
            assert_eq!(ignored_env_vars(), ["TIDINGS_BIN", "TIDINGS_HEARTBEET"]);
            Ok(())
        });
    }

    #[test]
    fn a_bad_variable_is_named_in_the_error() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TIDINGS_LIMITS__MAX_FRAME_BYTES", "lots");
            let error = Config::from_figment(&Config::figment(None))
                .unwrap_err()
                .to_string();
            assert!(error.contains("TIDINGS_LIMITS__MAX_FRAME_BYTES"), "{error}");
            jail.set_env("TIDINGS_LIMITS__MAX_FRAME_BYTES", "10");
            jail.set_env("TIDINGS_LIMITS__NOPE", "1");
            let error = Config::from_figment(&Config::figment(None))
                .unwrap_err()
                .to_string();
            assert!(error.contains("nope"), "{error}");
            Ok(())
        });
    }
}
