//! The connection to the shared quota state and its scripts: reserve, release, pause, spacing.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use pacer_limit::{Cap, Model, Quota};

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
    /// Per cap of the quota ([`Quota::caps`] order), how many slots it counts after this
    /// reservation and when the oldest leaves its window (microseconds since the epoch, 0 when
    /// it counts none).
    pub(crate) caps: Vec<(u64, u64)>,
    /// When a horizon cut the reservation short: when the first slot not booked would be, as
    /// a delay from `redis_now_micros`.
    pub(crate) beyond: Option<Duration>,
    /// The pause in force in Redis when the slots were reserved, as a delay from
    /// `redis_now_micros`: the slots are after it, and the process drops any it holds inside it
    /// (another process's refusal paused the key).
    pub(crate) paused_for: Option<Duration>,
    /// The gap a reservation following another process's slot leaves before its first slot
    /// while a spacing margin is in force (see [`RedisStore::widen_spacing`]); zero when none
    /// is. A process the server never refused learns from it that another found the server
    /// strict, and how late its last slot before another process's may go.
    pub(crate) junction: Duration,
}

/// What identifies one reserved slot to the release scripts. `at` is the slot's time
/// (microseconds since the epoch, Redis's clock): what the quota's caps counted it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// The TAT before this slot and after it: the slot can be taken back (the TAT restored to
    /// `before`) while the TAT is still `after`.
    Gcra { before: i64, after: i64, at: i64 },
    /// The slot's member in the window's sorted set.
    Sliding { member: i64, at: i64 },
}

impl Token {
    /// The slot's booked time (microseconds since the epoch, Redis's clock).
    pub(crate) fn at(&self) -> i64 {
        match *self {
            Token::Gcra { at, .. } | Token::Sliding { at, .. } => at,
        }
    }

    /// The TAT this slot left, for an evenly spaced quota: a reservation that still finds it
    /// continues this slot (no other process booked between).
    pub(crate) fn tat_after(&self) -> Option<i64> {
        match *self {
            Token::Gcra { after, .. } => Some(after),
            Token::Sliding { .. } => None,
        }
    }

    /// The TAT this slot was booked from, for an evenly spaced quota: the one the slot before
    /// it left, when that slot was the one just before it.
    pub(crate) fn tat_before(&self) -> Option<i64> {
        match *self {
            Token::Gcra { before, .. } => Some(before),
            Token::Sliding { .. } => None,
        }
    }
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
    release_caps: Script,
    pause: Script,
    spacing: Script,
    members: Script,
    rejoin: Script,
}

/// Where a process coming back from its local share stands (see `rejoin.lua`), on Redis's clock
/// in microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rejoin {
    pub(crate) redis_now_micros: u64,
    /// The quota's pause in force (0: none).
    pub(crate) paused_until: u64,
    /// When the shared schedule starts again after the outage (0: no rejoin on record).
    pub(crate) shared_from: u64,
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
                include_str!("caps.lua"),
                include_str!("gcra.lua")
            )),
            sliding: Script::new(concat!(
                include_str!("prelude.lua"),
                include_str!("caps.lua"),
                include_str!("sliding.lua")
            )),
            release: Script::new(include_str!("release.lua")),
            release_caps: Script::new(include_str!("release_caps.lua")),
            pause: Script::new(include_str!("pause.lua")),
            spacing: Script::new(include_str!("spacing.lua")),
            members: Script::new(include_str!("members.lua")),
            rejoin: Script::new(include_str!("rejoin.lua")),
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

    /// The sorted set and the hash of counts of `cap` on `key`. Named by the cap's window and
    /// limit, not the primary window's: processes pacing the key differently still count one
    /// daily quota together. They live one window past the cap's newest slot (a day for a
    /// daily cap), not the seconds the primary window's state lives.
    fn cap_keys(&self, key: &str, cap: &Cap) -> (String, String) {
        let name = format!(
            "{}:cap:{}:{}",
            self.tag(key),
            micros(cap.effective_window()).max(1),
            cap.limit()
        );
        (format!("{name}:at"), format!("{name}:count"))
    }

    /// Reserves `slots` consecutive send slots of `key` under `quota`: when each may be sent,
    /// on Redis's clock, which every process shares. Every window of the quota holds: its own
    /// (by its model) and each [`Cap`] it stacks ([`Quota::and`]), counted as a sliding window.
    /// While a spacing margin is in force ([`widen_spacing`](Self::widen_spacing)), the first
    /// slot of an evenly spaced quota comes six margins later than the interval alone would
    /// put it: a reservation made here is taken to follow another process's slots.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn reserve(
        &self,
        key: &str,
        quota: &Quota,
        slots: u32,
    ) -> Result<Reservation, RedisError> {
        self.reserve_within(key, quota, slots, None, None).await
    }

    /// [`reserve`](Self::reserve), booking no slot of an evenly spaced (GCRA) quota later than
    /// `horizon` from now: what a process books for bulk waiters, so that the urgent requests
    /// of other processes never wait behind a long run of them. A sliding window ignores it.
    pub(crate) async fn reserve_within(
        &self,
        key: &str,
        quota: &Quota,
        slots: u32,
        horizon: Option<Duration>,
        follows: Option<i64>,
    ) -> Result<Reservation, RedisError> {
        let state = self.state_key(key, quota)?;
        let pause = format!("{}:pause", self.tag(key));
        let mut connection = self.connection.clone();
        let mut invocation = match shape(quota)? {
            Shape::Gcra { burst } => {
                let (interval, tolerance) = gcra_params(quota, burst);
                let mut invocation = self.gcra.key(state);
                invocation
                    .key(pause)
                    .key(format!("{}:spacing", self.tag(key)))
                    .arg(interval)
                    .arg(tolerance)
                    .arg(slots.max(1))
                    .arg(horizon.map_or(0, |h| micros(h).max(1)))
                    .arg(follows.unwrap_or(0));
                invocation
            }
            Shape::Sliding => {
                let window = micros(quota.effective_window()).max(1);
                let mut invocation = self.sliding.key(&state);
                invocation
                    .key(pause)
                    .key(format!("{state}:seq"))
                    .arg(window)
                    .arg(quota.limit())
                    .arg(slots.max(1))
                    // The horizon's and the junction's places: a sliding window ignores them.
                    .arg(0)
                    .arg(0);
                invocation
            }
        };
        for cap in quota.caps() {
            let (at, count) = self.cap_keys(key, &cap);
            invocation
                .key(at)
                .key(count)
                .arg(micros(cap.effective_window()).max(1))
                .arg(cap.limit())
                .arg(granule(&cap));
        }
        let reply: Vec<i64> = invocation.invoke_async(&mut connection).await?;
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
        if quota.caps().next().is_some() {
            self.release_caps(key, quota, tokens).await?;
        }
        let mut invocation = self.release.key(self.state_key(key, quota)?);
        if let Model::Gcra { .. } = quota.model() {
            invocation.arg("gcra");
            // Newest first: each restores the TAT the previous one leaves.
            for token in tokens.iter().rev() {
                if let Token::Gcra { before, after, .. } = *token {
                    invocation.arg(after).arg(before);
                }
            }
        } else {
            invocation.arg("sliding");
            for token in tokens {
                if let Token::Sliding { member, .. } = token {
                    invocation.arg(*member);
                }
            }
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await
    }

    /// Uncounts unused slots from the caps of `quota` (whether or not the quota's own state
    /// takes them back: either way they are not sent).
    async fn release_caps(
        &self,
        key: &str,
        quota: &Quota,
        tokens: &[Token],
    ) -> Result<(), RedisError> {
        let mut invocation = self.release_caps.prepare_invoke();
        for cap in quota.caps() {
            let (at, count) = self.cap_keys(key, &cap);
            invocation.key(at).key(count).arg(granule(&cap));
        }
        for token in tokens {
            invocation.arg(token.at());
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
        self.widen_spacing_within(key, extra, step, half_life, Duration::ZERO)
            .await
    }

    /// [`widen_spacing`](Self::widen_spacing), taking no step within `round` of the last
    /// widening (only the wider of `extra` and the margin in force): the refusal was of a slot
    /// booked before it, since the pause that came with that widening holds every process for
    /// about that long.
    ///
    /// # Errors
    /// When Redis fails or is unreachable.
    pub async fn widen_spacing_within(
        &self,
        key: &str,
        extra: f64,
        step: f64,
        half_life: Duration,
        round: Duration,
    ) -> Result<f64, RedisError> {
        let millionths = |fraction: f64| (fraction.clamp(0.0, 1000.0) * 1e6).round() as u64;
        let mut connection = self.connection.clone();
        let margin: i64 = self
            .spacing
            .key(format!("{}:spacing", self.tag(key)))
            .arg(millionths(extra))
            .arg(millionths(step))
            .arg(micros(half_life).max(1))
            .arg(micros(round))
            .invoke_async(&mut connection)
            .await?;
        Ok(margin.max(0) as f64 / 1e6)
    }

    /// Counts `member` alive in this prefix for `life`, and returns how many members are
    /// alive (the processes sharing the prefix's quotas) and this one's rank among them.
    pub(crate) async fn heartbeat(
        &self,
        member: &str,
        life: Duration,
    ) -> Result<(u32, u32), RedisError> {
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .members
            .key(format!("{{pacer:{}}}:members", escape(&self.prefix)))
            .arg(member)
            .arg(micros(life).max(1))
            .invoke_async(&mut connection)
            .await?;
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        match reply[..] {
            [alive, rank] => Ok((count(alive).max(1), count(rank))),
            _ => Err(RedisError::from((
                redis::ErrorKind::TypeError,
                "unexpected reply to the membership script",
            ))),
        }
    }

    /// Rejoins `key`'s shared schedule after an outage (see `rejoin.lua`): the first process
    /// back pauses it for `rejoin_after`.
    pub(crate) async fn rejoin(
        &self,
        key: &str,
        quota: &Quota,
        rejoin_after: Duration,
    ) -> Result<Rejoin, RedisError> {
        let keep = quota.effective_window().max(Duration::from_secs(1));
        let tag = self.tag(key);
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .rejoin
            .key(format!("{tag}:pause"))
            .key(format!("{tag}:rejoin"))
            .arg(micros(rejoin_after))
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut connection)
            .await?;
        match reply[..] {
            [now, paused_until, shared_from] => Ok(Rejoin {
                redis_now_micros: now.max(0).unsigned_abs(),
                paused_until: paused_until.max(0).unsigned_abs(),
                shared_from: shared_from.max(0).unsigned_abs(),
            }),
            _ => Err(RedisError::from((
                redis::ErrorKind::TypeError,
                "unexpected reply to the rejoin script",
            ))),
        }
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

/// A cap's limit up to which its slots are counted exactly in Redis, one entry per slot time.
const EXACT_CAP_UP_TO: u32 = 1024;

/// The grid a cap's slots are counted on, in microseconds: exact (1 us) up to
/// [`EXACT_CAP_UP_TO`] slots per window, else a 1/1024 of the window, so that a cap's state
/// holds at most about 1,024 entries whatever its limit (a 50,000 per day cap: one per
/// 85 s). Times are rounded up, so a slot is counted no shorter than it is in the window.
fn granule(cap: &Cap) -> u64 {
    if cap.limit() <= EXACT_CAP_UP_TO {
        1
    } else {
        (micros(cap.effective_window()) / 1024).max(1)
    }
}

fn gcra_params(quota: &Quota, burst: u32) -> (u64, u64) {
    let interval = micros(quota.emission_interval()).max(1);
    (interval, interval.saturating_mul(u64::from(burst - 1)))
}

/// `{now, (offset, a, b)..., [beyond], (count, frees_at) per cap, pause, junction}` as a
/// [`Reservation`]; `None` when malformed.
fn parse_reservation(quota: &Quota, reply: &[i64]) -> Option<Reservation> {
    let (&junction, reply) = reply.split_last()?;
    let (&pause, reply) = reply.split_last()?;
    let (&now, rest) = reply.split_first()?;
    let paused_for =
        (pause > now).then(|| Duration::from_micros(pause.saturating_sub(now).unsigned_abs()));
    let counts = rest.len().checked_sub(2 * quota.caps().count())?;
    let (mut slots, caps) = rest.split_at(counts);
    let mut beyond = None;
    match slots.len() % 3 {
        0 => {}
        1 => {
            let (&last, rest) = slots.split_last()?;
            beyond = Some(Duration::from_micros(last.max(0).unsigned_abs()));
            slots = rest;
        }
        _ => return None,
    }
    let caps = caps
        .chunks_exact(2)
        .map(|cap| (cap[0].max(0).unsigned_abs(), cap[1].max(0).unsigned_abs()))
        .collect();
    let gcra = matches!(quota.model(), Model::Gcra { .. });
    let (slots, tokens) = slots
        .chunks_exact(3)
        .map(|slot| {
            let offset = Duration::from_micros(slot[0].max(0).unsigned_abs());
            let at = now.saturating_add(slot[0].max(0));
            let token = if gcra {
                Token::Gcra {
                    before: slot[1],
                    after: slot[2],
                    at,
                }
            } else {
                Token::Sliding {
                    member: slot[1],
                    at,
                }
            };
            (offset, token)
        })
        .unzip();
    Some(Reservation {
        redis_now_micros: now.max(0).unsigned_abs(),
        slots,
        tokens,
        caps,
        beyond,
        paused_for,
        junction: Duration::from_micros(junction.max(0).unsigned_abs()),
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
        fn any_reply_parses_or_is_refused(reply in proptest::collection::vec(any::<i64>(), 0..40), gcra in any::<bool>(), caps in 0usize..=2) {
            let quota = if gcra { Quota::per_second(10).gcra(2) } else { Quota::per_second(10).sliding_window() };
            let quota = [Quota::per_minute(100), Quota::per_day(1_000)][..caps]
                .iter()
                .fold(quota, |quota, cap| quota.and(*cap));
            // Redis's now, each cap's two numbers, the pause, the junction gap.
            let tail = 3 + 2 * caps;
            match parse_reservation(&quota, &reply) {
                None => prop_assert!(reply.len() < tail || (reply.len() - tail) % 3 == 2),
                Some(reservation) => {
                    prop_assert_eq!(reservation.slots.len(), (reply.len() - tail) / 3);
                    prop_assert_eq!(reservation.beyond.is_some(), (reply.len() - tail) % 3 == 1);
                    prop_assert_eq!(reservation.caps.len(), caps);
                    prop_assert_eq!(reservation.tokens.len(), reservation.slots.len());
                    let kinds_match = reservation.tokens.iter().all(|token| matches!(token, Token::Gcra { .. }) == gcra);
                    prop_assert!(kinds_match);
                    prop_assert_eq!(reservation.paused_for.is_some(), reply[reply.len() - 2] > reply[0]);
                    prop_assert_eq!(reservation.junction.is_zero(), reply[reply.len() - 1] <= 0);
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

    /// `per_second` sends evenly spaced, without a margin.
    fn even(per_second: u32) -> Quota {
        Quota::per_second(per_second)
            .gcra(1)
            .with_margin(std::time::Duration::ZERO)
    }

    /// Reserves `slots` of `key` continuing `follows`: each slot's time on Redis's clock, in
    /// microseconds, and the TAT the last one left.
    async fn book(
        store: &super::RedisStore,
        key: &str,
        slots: u32,
        follows: Option<i64>,
    ) -> (Vec<u64>, Option<i64>) {
        let quota = even(100);
        let reservation = store
            .reserve_within(key, &quota, slots, None, follows)
            .await
            .unwrap();
        let at = reservation
            .slots
            .iter()
            .map(|slot| reservation.redis_now_micros + slot.as_micros() as u64)
            .collect();
        (at, reservation.tokens.last().and_then(Token::tat_after))
    }

    /// Two connections to `redis`, as two processes would have, `key`'s spacing margin widened
    /// to `margin` by the first.
    async fn two_processes(
        redis: &pacer_testkit::RedisServer,
        key: &str,
        margin: f64,
    ) -> (super::RedisStore, super::RedisStore) {
        let url = redis.url();
        let one = super::RedisStore::connect(&url, "test").await.unwrap();
        let other = super::RedisStore::connect(&url, "test").await.unwrap();
        let hour = std::time::Duration::from_secs(3600);
        one.widen_spacing(key, margin, margin, hour).await.unwrap();
        (one, other)
    }

    /// While a margin is in force, a reservation continuing the caller's own block of slots
    /// is spaced by the margin; one after another process's slot (or the caller's, after
    /// another's) leaves the junction gap too: six margins more, which the reply tells.
    #[tokio::test]
    async fn a_slot_after_another_process_leaves_the_junction_gap() {
        let Some(redis) = pacer_testkit::RedisServer::start() else {
            return;
        };
        let interval = 10_000; // 100 per second, in microseconds
        let spaced = interval * 11 / 10;
        let junction = spaced + interval * 6 / 10;
        let (one, other) = two_processes(&redis, "k", 0.1).await;
        let near = |apart: u64, expected: u64| apart.abs_diff(expected) <= 2;
        let (first, follows) = book(&one, "k", 3, None).await;
        let (next, follows) = book(&one, "k", 2, follows).await;
        assert!(near(next[0] - first[2], spaced), "{first:?} then {next:?}");
        assert!(near(next[1] - next[0], spaced), "{next:?}");
        let (theirs, _) = book(&other, "k", 1, None).await;
        assert!(
            near(theirs[0] - next[1], junction),
            "{next:?} then {theirs:?}"
        );
        let (again, _) = book(&one, "k", 1, follows).await;
        assert!(
            near(again[0] - theirs[0], junction),
            "{theirs:?} then {again:?}"
        );
        // Without a margin, no junction.
        let (first, _) = book(&one, "plain", 2, None).await;
        let (theirs, _) = book(&other, "plain", 1, None).await;
        assert!(
            near(theirs[0] - first[1], interval),
            "{first:?} then {theirs:?}"
        );
    }

    /// A bulk reservation the horizon cuts short before its first slot leaves the schedule as
    /// it was: retried when its slot comes within the horizon, it books it (the junction gap
    /// is counted once, not added again on every try).
    #[tokio::test]
    async fn a_reservation_cut_short_by_the_horizon_adds_no_junction_gap() {
        let Some(redis) = pacer_testkit::RedisServer::start() else {
            return;
        };
        let quota = even(100);
        let (one, other) = two_processes(&redis, "k", 0.5).await;
        book(&one, "k", 4, None).await;
        let horizon = std::time::Duration::from_millis(10);
        let mut tries = 0;
        let booked = loop {
            tries += 1;
            assert!(tries <= 5, "still cut short after {tries} tries");
            let reservation = other
                .reserve_within("k", &quota, 1, Some(horizon), None)
                .await
                .unwrap();
            if let Some(&slot) = reservation.slots.first() {
                break slot;
            }
            let beyond = reservation.beyond.expect("cut short by the horizon");
            tokio::time::sleep(beyond.saturating_sub(horizon)).await;
        };
        assert!(booked <= horizon, "{booked:?}");
    }

    /// Every reservation tells the junction gap in force (six margins of the interval), so a
    /// process the server never refused learns that another found it strict; none without a
    /// margin, and none from a sliding window, which spaces nothing.
    #[tokio::test]
    async fn the_reply_tells_the_junction_gap_in_force() {
        let Some(redis) = pacer_testkit::RedisServer::start() else {
            return;
        };
        let (one, other) = two_processes(&redis, "k", 0.1).await;
        let quota = even(100);
        // The gap one reservation of `key` under `quota` tells, in microseconds.
        let junction = |store: &super::RedisStore, key: &'static str, quota: Quota| {
            let store = store.clone();
            async move {
                let reservation = store.reserve_within(key, &quota, 1, None, None).await;
                reservation.unwrap().junction.as_micros()
            }
        };
        let told = junction(&other, "k", quota).await;
        // 6 x 0.1 x 10 ms, decayed for a few milliseconds of an hour's half-life.
        assert!((5_990..=6_000).contains(&told), "{told}");
        assert_eq!(junction(&one, "plain", quota).await, 0);
        let sliding = junction(&one, "k", Quota::per_second(100).sliding_window()).await;
        assert_eq!(sliding, 0);
    }

    /// The junction gap also follows another process's slot whose TAT has just passed: that
    /// slot's send may still be on its way, late.
    #[tokio::test]
    async fn a_junction_just_after_the_tat_passed_still_leaves_the_gap() {
        let Some(redis) = pacer_testkit::RedisServer::start() else {
            return;
        };
        // At a margin of 1 and 10 per second: slots 200 ms apart, a junction gap of 600 ms.
        let (one, other) = two_processes(&redis, "k", 1.0).await;
        let quota = even(10);
        let at = |reservation: &super::Reservation| {
            reservation.redis_now_micros + reservation.slots[0].as_micros() as u64
        };
        let first = one
            .reserve_within("k", &quota, 1, None, None)
            .await
            .unwrap();
        // The TAT (200 ms after the slot) passes; the junction (600 ms more) does not.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let theirs = other
            .reserve_within("k", &quota, 1, None, None)
            .await
            .unwrap();
        let apart = at(&theirs) - at(&first);
        assert!(apart >= 790_000, "{apart} us apart");
    }
}
