//! Loading: the layers (TOML file, environment), merged by figment, extracted into a
//! [`Config`] whose missing fields keep their defaults.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError};

impl Config {
    /// The standard layers, weakest first: the TOML file (if any), then `TIDINGS_*`
    /// environment variables (with the `env` feature, on in the binary). Defaults sit below
    /// them all; merge stronger layers (flags) on top, then call [`Config::from_figment`].
    ///
    /// ```
    /// use tidings_server::Config;
    /// use tidings_server::config::Override;
    ///
    /// # fn main() -> Result<(), tidings_server::config::ConfigError> {
    /// let figment = Config::figment(None)
    ///     // A stronger layer, e.g. a command-line flag of your own.
    ///     .merge(Override::new("--heartbeat", "heartbeat", "10s"));
    /// let config = Config::from_figment(&figment)?;
    /// config.validate()?;
    /// assert_eq!(config.heartbeat, std::time::Duration::from_secs(10));
    /// # Ok(()) }
    /// ```
    pub fn figment(file: Option<&Path>) -> Figment {
        let figment = match file {
            Some(path) => Figment::from(Toml::file_exact(path)),
            None => Figment::new(),
        };
        #[cfg(feature = "env")]
        let figment = super::env::merge(figment);
        figment
    }

    /// The [`Config`] the layers describe; absent keys keep their defaults. Not validated:
    /// call [`Config::validate`] once everything is filled in.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        Ok(figment.extract()?)
    }

    /// [`Config::figment`], extracted and validated: what the `tidings` binary runs with,
    /// minus its flags.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config = Config::from_figment(&Config::figment(file))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file alone (no environment); absent keys keep their defaults. Not
    /// validated.
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        Config::from_figment(&Figment::from(Toml::file_exact(path)))
    }

    /// Parses TOML text alone; absent keys keep their defaults. Not validated.
    ///
    /// ```
    /// # fn main() -> Result<(), tidings_server::config::ConfigError> {
    /// let config = tidings_server::Config::from_toml_str("heartbeat = \"25s\"\n[limits]\nmax_subscriptions = 16")?;
    /// assert_eq!(config.limits.max_subscriptions, 16);
    /// # Ok(()) }
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(&Figment::from(Toml::string(text)))
    }
}

/// One setting from a named source (a flag, a variable), as a figment layer: errors about
/// it name the source (`--bind`), not the key.
#[derive(Debug, Clone)]
pub struct Override {
    source: String,
    key: String,
    value: Value,
}

impl Override {
    /// `key` is the dotted TOML path (`storage.data_dir`); `source` is what the user wrote
    /// (`--data-dir`, `TIDINGS_DATA_DIR`).
    pub fn new(source: impl Into<String>, key: impl Into<String>, value: impl Into<Value>) -> Self {
        Override {
            source: source.into(),
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Provider for Override {
    fn metadata(&self) -> Metadata {
        let source = self.source.clone();
        Metadata::named(self.source.clone())
            .interpolater(move |_: &Profile, _: &[&str]| source.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::global(&self.key, &self.value).data()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::result_large_err)]

    use std::time::Duration;

    use figment::Jail;

    use super::*;

    #[test]
    fn a_missing_file_is_an_error_that_names_it() {
        let error = Config::from_toml_file(Path::new("/nonexistent/tidings.toml")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/tidings.toml"),
            "{error}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[limits]\nmax_frame_bytes = \"big\"\n")?;
            let error = Config::from_toml_file(Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("`limits.max_frame_bytes`"), "{error}");
            assert!(error.contains("t.toml"), "{error}");
            let typo = Config::from_toml_str("heartbeet = \"1s\"")
                .unwrap_err()
                .to_string();
            assert!(typo.contains("heartbeet"), "{typo}");
            Ok(())
        });
    }

    #[test]
    fn overrides_beat_the_file_and_name_themselves() {
        Jail::expect_with(|jail| {
            jail.create_file("t.toml", "bind = \"127.0.0.1:1\"\nheartbeat = \"5s\"\n")?;
            let figment = Figment::from(Toml::file_exact("t.toml")).merge(Override::new(
                "--bind",
                "bind",
                "127.0.0.1:2",
            ));
            let config = Config::from_figment(&figment).unwrap();
            assert_eq!(config.bind, "127.0.0.1:2");
            assert_eq!(config.heartbeat, Duration::from_secs(5));
            let bad = figment.merge(Override::new("--heartbeat", "heartbeat", "soon"));
            let error = Config::from_figment(&bad).unwrap_err().to_string();
            assert!(error.contains("from --heartbeat"), "{error}");
            Ok(())
        });
    }
}
