//! The throttle as a whole, on tokio's paused clock.

use super::*;
use crate::routes::{ADD_MEMBERS, CREATE_ORG, GET_PROPERTY, SET_PROPERTY};

fn throttle(cfg: ThrottleConfig) -> Arc<Throttle> {
    Arc::new(Throttle::new(&cfg))
}

/// Send `n` requests of `route` one after another; when the last left.
async fn send(t: &Throttle, route: Route, n: usize) -> Instant {
    for _ in 0..n {
        let p = t.acquire(route).await.unwrap();
        t.on_answer(route, p.sent_at, Signal::default());
    }
    Instant::now()
}

#[tokio::test(start_paused = true)]
async fn each_endpoint_is_paced_at_its_methods_default() {
    let t = throttle(ThrottleConfig::default());
    let start = Instant::now();
    let (puts, posts) = tokio::join!(send(&t, SET_PROPERTY, 51), send(&t, ADD_MEMBERS, 101));
    // 50 intervals at 50/s and 100 intervals at 100/s: one second each,
    // side by side rather than one after the other.
    for end in [puts, posts] {
        let e = end - start;
        assert!(e >= Duration::from_millis(1000) - pacer::EARLY && e <= Duration::from_millis(1000), "{e:?}");
    }
    assert_eq!(t.snapshot().requests, 152);
    let busiest = t.busiest_since(&RouteCounts::new()).unwrap();
    // 51 at 50/s need a little longer than 101 at 100/s.
    assert_eq!((busiest.route, busiest.requests), (SET_PROPERTY, 51));
}

#[tokio::test(start_paused = true)]
async fn a_ceiling_caps_the_total() {
    let t = throttle(ThrottleConfig { ceiling: Some(50.0), ..ThrottleConfig::default() });
    let start = Instant::now();
    tokio::join!(send(&t, CREATE_ORG, 26), send(&t, ADD_MEMBERS, 25));
    let e = start.elapsed();
    assert!(e >= Duration::from_millis(1000) - pacer::EARLY && e <= Duration::from_millis(1000), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_burst_429_pauses_and_slows_only_its_endpoint() {
    let t = throttle(ThrottleConfig::default());
    let p = t.acquire(SET_PROPERTY).await.unwrap();
    t.on_rate_limited(
        SET_PROPERTY,
        p.sent_at,
        Scope::Endpoint,
        Duration::from_secs(5),
        Signal { limit: Some(20.0), near_limit: false },
    );
    let before = Instant::now();
    send(&t, ADD_MEMBERS, 1).await;
    assert!(before.elapsed() < Duration::from_millis(20), "the other endpoint does not wait");
    assert_eq!(t.current_rate(ADD_MEMBERS), 100.0);
    send(&t, SET_PROPERTY, 1).await;
    assert!(before.elapsed() >= Duration::from_secs(5), "the pause is served in full");
    assert_eq!(t.current_rate(SET_PROPERTY), 20.0, "the stated limit is learned");
    assert_eq!(t.snapshot().rate_limited, 1);
}

#[tokio::test(start_paused = true)]
async fn a_quota_429_pauses_everything_and_learns_the_site_limit() {
    let t = throttle(ThrottleConfig::default());
    let p = t.acquire(GET_PROPERTY).await.unwrap();
    t.on_rate_limited(
        GET_PROPERTY,
        p.sent_at,
        Scope::Site,
        Duration::from_secs(3),
        Signal { limit: Some(40.0), near_limit: false },
    );
    let before = Instant::now();
    send(&t, ADD_MEMBERS, 1).await;
    assert!(before.elapsed() >= Duration::from_secs(3), "every endpoint waits the whole pause");
    assert_eq!(t.site_rate(), 40.0);
    assert_eq!(t.current_rate(ADD_MEMBERS), 100.0, "the endpoints keep their own rates");
}

#[tokio::test(start_paused = true)]
async fn aborting_ends_every_wait_and_later_acquires() {
    let t = throttle(ThrottleConfig::default());
    let p = t.acquire(SET_PROPERTY).await.unwrap();
    t.on_rate_limited(SET_PROPERTY, p.sent_at, Scope::Site, Duration::from_secs(60), Signal::default());
    let waiters: Vec<_> = [SET_PROPERTY, ADD_MEMBERS, CREATE_ORG]
        .into_iter()
        .map(|r| {
            let t = t.clone();
            tokio::spawn(async move { t.acquire(r).await.map(|_| ()) })
        })
        .collect();
    let sleeper = {
        let t = t.clone();
        tokio::spawn(async move { t.sleep(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = Instant::now();
    t.abort("interrupted (Ctrl-C)");
    t.abort("a second reason is ignored");
    for w in waiters {
        assert_eq!(w.await.unwrap(), Err(Aborted("interrupted (Ctrl-C)".into())));
    }
    assert!(sleeper.await.unwrap().is_err());
    assert!(before.elapsed() < Duration::from_secs(1));
    assert_eq!(t.snapshot().requests, 1, "only the request that left is counted");
    assert!(t.acquire(ADD_MEMBERS).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_cap_follows_littles_law() {
    let t = throttle(ThrottleConfig::default());
    // 100/s at 200 ms: 20 in flight, 30 + 2 with headroom.
    for _ in 0..30 {
        let p = t.acquire(ADD_MEMBERS).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.on_answer(ADD_MEMBERS, p.sent_at, Signal::default());
    }
    assert_eq!(t.in_flight_limit(), 32);
    assert_eq!(t.concurrency(), inflight::MAX_IN_FLIGHT);
    let fixed = throttle(ThrottleConfig { concurrency: Some(3), ..ThrottleConfig::default() });
    assert_eq!((fixed.in_flight_limit(), fixed.concurrency()), (3, 3));
}
