//! The connection to the shared quota state and its three scripts: reserve, release, pause.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use pacer_limit::{Model, Quota};

/// Slots reserved in one call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reservation {
    /// Redis's clock when the slots were reserved, in microseconds since the Unix epoch.
    pub redis_now_micros: u64,
    /// When each slot may be sent, as a delay from `redis_now_micros`.
    pub slots: Vec<Duration>,
    /// What gives each slot back (see [`RedisStore::release_unused`]).
    pub(crate) tokens: Vec<Token>,
}

/// What identifies one reserved slot to the release script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// The TAT before this slot and after it: the slot can be taken back (the TAT restored to
    /// `before`) while the TAT is still `after`.
    Gcra { before: i64, after: i64 },
    /// The slot's member in the window's sorted set.
    Sliding { member: i64 },
}

/// A connection to the shared quota state in Redis. Cheap to clone: clones share the
/// multiplexed, auto-reconnecting connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    gcra: Script,
    sliding: Script,
    release: Script,
    pause: Script,
    spacing: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is not kept.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`); keys are named under `prefix` (one
    /// prefix per quota domain, e.g. a Customer.io workspace).
    ///
    /// The connection reconnects on its own after Redis restarts; a limiter using it falls back
    /// while Redis is unreachable (see [`SharedQuota`](crate::SharedQuota)).
    ///
    /// # Errors
    /// When the URL is invalid or Redis cannot be reached now.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(url)?;
        // One connection attempt per reconnection, no backoff: calls wait for a reconnection
        // in progress, and the limiter has a fallback and its own retry cadence, so the
        // manager's jittered backoff (up to a second) would only delay the return to the
        // shared quota after Redis restarts.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(250))
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            gcra: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("gcra.lua")
            )),
            sliding: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("sliding.lua")
            )),
            release: Script::new(include_str!("release.lua")),
            pause: Script::new(include_str!("pause.lua")),
            spacing: Script::new(include_str!("spacing.lua")),
        })
    }

    /// The hash tag of `key`: every key of one quota key shares it, hence one Cluster slot.
    fn tag(&self, key: &str) -> String {
        format!("{{pacer:{}:{}}}", escape(&self.prefix), escape(key))
    }

    /// The state key of `key` under `quota`: the parameters are part of the name, so two
    /// configurations of one key never read each other's state.
    fn state_key(&self, key: &str, quota: &Quota) -> Result<String, RedisError> {
        let tag = self.tag(key);
        Ok(match shape(quota)? {
            Shape::Gcra { burst } => {
                let (interval, tolerance) = gcra_params(quota, burst);
                format!("{tag}:gcra:{interval}:{tolerance}")
            }
            Shape::Sliding => {
                let window = micros(quota.effective_window()).max(1);
                format!("{tag}:sliding:{window}:{}", quota.limit())
            }
        })
    }

    /// Reserves `slots` consecutive send slots of `key` under `quota`: when each may be sent,
    /// on Redis's clock, which every process shares.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn reserve(
        &self,
        key: &str,
        quota: &Quota,
        slots: u32,
    ) -> Result<Reservation, RedisError> {
        let state = self.state_key(key, quota)?;
        let pause = format!("{}:pause", self.tag(key));
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = match shape(quota)? {
            Shape::Gcra { burst } => {
                let (interval, tolerance) = gcra_params(quota, burst);
                self.gcra
                    .key(state)
                    .key(pause)
                    .key(format!("{}:spacing", self.tag(key)))
                    .arg(interval)
                    .arg(tolerance)
                    .arg(slots.max(1))
                    .invoke_async(&mut connection)
                    .await?
            }
            Shape::Sliding => {
                let window = micros(quota.effective_window()).max(1);
                self.sliding
                    .key(&state)
                    .key(pause)
                    .key(format!("{state}:seq"))
                    .arg(window)
                    .arg(quota.limit())
                    .arg(slots.max(1))
                    .invoke_async(&mut connection)
                    .await?
            }
        };
        parse_reservation(quota, &reply).ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::TypeError,
                "unexpected reply to the reservation script",
            ))
        })
    }

    /// Gives back the slots of `reservation` from index `first_unused` on, which will not be
    /// sent, so that other processes may take them. Sliding-window slots always leave the
    /// window (later reservations still never go before the newest slot reserved); a GCRA
    /// reservation comes back only while nobody has reserved after it. Returns how many slots
    /// came back.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn release_unused(
        &self,
        key: &str,
        quota: &Quota,
        reservation: &Reservation,
        first_unused: usize,
    ) -> Result<u32, RedisError> {
        let tokens = reservation.tokens.get(first_unused..).unwrap_or_default();
        self.release(key, quota, tokens).await
    }

    /// Gives back unused slots, oldest first (of any number of reservations).
    pub(crate) async fn release(
        &self,
        key: &str,
        quota: &Quota,
        tokens: &[Token],
    ) -> Result<u32, RedisError> {
        if tokens.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.release.key(self.state_key(key, quota)?);
        if let Model::Gcra { .. } = quota.model() {
            invocation.arg("gcra");
            // Newest first: each restores the TAT the previous one leaves.
            for token in tokens.iter().rev() {
                if let Token::Gcra { before, after } = *token {
                    invocation.arg(after).arg(before);
                }
            }
        } else {
            invocation.arg("sliding");
            for token in tokens {
                if let Token::Sliding { member } = token {
                    invocation.arg(*member);
                }
            }
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await
    }

    /// Pauses `key` for every process for `wait` (a longer pause already set stands); returns
    /// the pause in force. The pause stays on record for a second after it ends.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn pause_for(&self, key: &str, wait: Duration) -> Result<Duration, RedisError> {
        self.pause_with_keep(key, wait, Duration::from_secs(1))
            .await
    }

    /// [`pause_for`](Self::pause_for), keeping the pause on record for one window of `quota`
    /// (at least a second) after it ends: the reservations of that window read it and space
    /// their slots evenly, rather than releasing what is left of the window at once.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn pause_for_quota(
        &self,
        key: &str,
        quota: &Quota,
        wait: Duration,
    ) -> Result<Duration, RedisError> {
        let keep = quota.effective_window().max(Duration::from_secs(1));
        self.pause_with_keep(key, wait, keep).await
    }

    /// Widens the spacing margin of `key` for every process: their reservations of an evenly
    /// spaced (GCRA) quota space slots by the interval times `1 + margin`. The margin becomes
    /// `extra` (this process's), or the one in force widened by `step` if that is wider, and
    /// halves every `half_life`. Returns the margin in force.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn widen_spacing(
        &self,
        key: &str,
        extra: f64,
        step: f64,
        half_life: Duration,
    ) -> Result<f64, RedisError> {
        let millionths = |fraction: f64| (fraction.clamp(0.0, 1000.0) * 1e6).round() as u64;
        let mut connection = self.connection.clone();
        let margin: i64 = self
            .spacing
            .key(format!("{}:spacing", self.tag(key)))
            .arg(millionths(extra))
            .arg(millionths(step))
            .arg(micros(half_life).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(margin.max(0) as f64 / 1e6)
    }

    async fn pause_with_keep(
        &self,
        key: &str,
        wait: Duration,
        keep: Duration,
    ) -> Result<Duration, RedisError> {
        let mut connection = self.connection.clone();
        let remaining: i64 = self
            .pause
            .key(format!("{}:pause", self.tag(key)))
            .arg(micros(wait).max(1))
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(Duration::from_micros(remaining.max(0).unsigned_abs()))
    }
}

/// `text` with `%`, `{` and `}` percent-encoded: a brace would end the hash tag early, and
/// encoding (rather than replacing) keeps distinct names distinct.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A GCRA quota's emission interval and tolerance, in microseconds.
/// The models a shared quota's scripts implement.
#[derive(Clone, Copy)]
enum Shape {
    Gcra { burst: u32 },
    Sliding,
}

/// Which script serves `quota`'s model; a model this crate does not know is a clear error
/// rather than the wrong arithmetic.
fn shape(quota: &Quota) -> Result<Shape, RedisError> {
    match quota.model() {
        Model::Gcra { burst } => Ok(Shape::Gcra { burst: burst.get() }),
        Model::SlidingWindow => Ok(Shape::Sliding),
        _ => Err(RedisError::from((
            redis::ErrorKind::ClientError,
            "this quota model cannot be shared through Redis",
        ))),
    }
}

fn gcra_params(quota: &Quota, burst: u32) -> (u64, u64) {
    let interval = micros(quota.emission_interval()).max(1);
    (interval, interval.saturating_mul(u64::from(burst - 1)))
}

/// `{now, (offset, a, b)...}` as a [`Reservation`]; `None` when malformed.
fn parse_reservation(quota: &Quota, reply: &[i64]) -> Option<Reservation> {
    let (&now, slots) = reply.split_first()?;
    if slots.len() % 3 != 0 {
        return None;
    }
    let gcra = matches!(quota.model(), Model::Gcra { .. });
    let (slots, tokens) = slots
        .chunks_exact(3)
        .map(|slot| {
            let offset = Duration::from_micros(slot[0].max(0).unsigned_abs());
            let token = if gcra {
                Token::Gcra {
                    before: slot[1],
                    after: slot[2],
                }
            } else {
                Token::Sliding { member: slot[1] }
            };
            (offset, token)
        })
        .unzip();
    Some(Reservation {
        redis_now_micros: now.max(0).unsigned_abs(),
        slots,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::{escape, parse_reservation, Token};
    use pacer_limit::Quota;
    use proptest::prelude::*;

    proptest! {
        /// Any reply, however hostile, parses into slots or is refused; never a panic, and
        /// never a slot before Redis's now.
        #[test]
        fn any_reply_parses_or_is_refused(reply in proptest::collection::vec(any::<i64>(), 0..40), gcra in any::<bool>()) {
            let quota = if gcra { Quota::per_second(10).gcra(2) } else { Quota::per_second(10).sliding_window() };
            match parse_reservation(&quota, &reply) {
                None => prop_assert!(reply.is_empty() || (reply.len() - 1) % 3 != 0),
                Some(reservation) => {
                    prop_assert_eq!(reservation.slots.len(), (reply.len() - 1) / 3);
                    prop_assert_eq!(reservation.tokens.len(), reservation.slots.len());
                    let kinds_match = reservation.tokens.iter().all(|token| matches!(token, Token::Gcra { .. }) == gcra);
                    prop_assert!(kinds_match);
                }
            }
        }

        /// Escaped names never contain a brace, and distinct names stay distinct.
        #[test]
        fn escaping_is_injective(a in ".{0,12}", b in ".{0,12}") {
            let braceless = !escape(&a).contains(['{', '}']);
            prop_assert!(braceless, "a brace survived in {:?}", escape(&a));
            prop_assert_eq!(a == b, escape(&a) == escape(&b));
        }
    }

    #[test]
    fn names_that_differ_stay_apart_and_braces_stay_out_of_the_tag() {
        assert_eq!(escape("a{b}"), "a%7Bb%7D");
        assert_ne!(escape("a{b}"), escape("a_b_"));
        assert_ne!(escape("%7B"), escape("{"));
        assert!(!escape("}{}").contains(['{', '}']));
    }
}
