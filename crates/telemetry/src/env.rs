//! Settings from environment variables, with errors that name the variable.

use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("environment variable {name} is required")]
    Missing { name: &'static str },
    #[error("environment variable {name} has an invalid value: {problem}")]
    Invalid { name: &'static str, problem: String },
}

/// The variable parsed as `T`, or `default` when unset or empty.
pub fn env_or<T: FromStr>(name: &'static str, default: T) -> Result<T, EnvError>
where
    T::Err: std::fmt::Display,
{
    Ok(env_opt(name)?.unwrap_or(default))
}

/// The variable parsed as `T`, or `None` when unset or empty.
pub fn env_opt<T: FromStr>(name: &'static str) -> Result<Option<T>, EnvError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map(Some).map_err(|e: T::Err| EnvError::Invalid { name, problem: e.to_string() })
        }
        _ => Ok(None),
    }
}

/// The variable parsed as `T`; an error when unset.
pub fn env_required<T: FromStr>(name: &'static str) -> Result<T, EnvError>
where
    T::Err: std::fmt::Display,
{
    env_opt(name)?.ok_or(EnvError::Missing { name })
}
