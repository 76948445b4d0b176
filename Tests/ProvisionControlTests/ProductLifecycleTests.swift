import Testing
import ProvisionModel
import ProvisionPipeline
@testable import ProvisionControl

@Suite struct RetryBackoffTests {
    @Test func growsExponentiallyUpToTheCap() {
        let backoff = RetryBackoff(initial: .milliseconds(500), cap: .seconds(30))
        #expect((1...8).map { backoff.ceiling(attempt: $0) } == [
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30),
        ])
        #expect(backoff.ceiling(attempt: 1000) == .seconds(30))
    }

    @Test func fullJitterScalesTheCeiling() {
        let backoff = RetryBackoff(initial: .seconds(1), cap: .seconds(60))
        #expect(backoff.delay(attempt: 3, unitRandom: 0) == .zero)
        #expect(backoff.delay(attempt: 3, unitRandom: 0.5) == .seconds(2))
        #expect(backoff.delay(attempt: 3, unitRandom: 0.999) < .seconds(4))
    }
}

@Suite struct ProductLifecycleTests {
    @Test func goesFromPendingThroughBackfillToLive() {
        var lifecycle = ProductLifecycle(now: 0)
        #expect(lifecycle.phase == .pending)
        lifecycle.provisioningStarted(now: 10)
        #expect(lifecycle.phase == .provisioning)
        lifecycle.progressed(caughtUp: false, advanced: false, now: 20)
        #expect(lifecycle.phase == .backfilling)
        #expect(lifecycle.conditions(now: 20).first { $0.type == "Reconciling" }?.isTrue == true)
        lifecycle.progressed(caughtUp: true, advanced: true, now: 30)
        #expect(lifecycle.phase == .live)
        let ready = lifecycle.conditions(now: 30).first { $0.type == "Ready" }
        #expect(ready?.isTrue == true)
        #expect(ready?.lastTransitionTime == Timestamp.format(30))
    }

    /// Records lost to retention need a person: the product is stalled, not reconciling, and
    /// the message says what to do; there is no retry to wait for.
    @Test func aStopForGoodIsStalledWithoutRetrying() {
        var lifecycle = ProductLifecycle(now: 0)
        lifecycle.provisioningStarted(now: 10)
        _ = lifecycle.failed(reason: "SinkUnavailable", message: "down", now: 20, unitRandom: 0)
        lifecycle.stoppedForGood(reason: "RecordsLostToRetention", message: "retention removed 5 records", now: 30)
        #expect(lifecycle.phase == .failed)
        #expect(lifecycle.failures == 0)
        let conditions = lifecycle.conditions(now: 30)
        #expect(conditions.first { $0.type == "Stalled" }.map { ($0.isTrue, $0.reason, $0.message) }
            ?? (false, "", "") == (true, "RecordsLostToRetention", "retention removed 5 records"))
        #expect(conditions.first { $0.type == "Reconciling" }?.isTrue == false)
        #expect(conditions.allSatisfy { !$0.message.contains("retrying") })
    }

    /// The count of failures comes back from status after a restart: the next retry waits as
    /// long as the one before the restart would have, not the shortest backoff again.
    @Test func theFailureCountSurvivesARestart() {
        let backoff = RetryBackoff(initial: .seconds(1), cap: .seconds(60))
        var fresh = ProductLifecycle(now: 0, backoff: backoff)
        var restarted = ProductLifecycle(now: 0, backoff: backoff, failures: 4)
        #expect(fresh.failed(reason: "SinkUnavailable", message: "down", now: 1, unitRandom: 0.999) == .retry(after: backoff.delay(attempt: 1, unitRandom: 0.999)))
        #expect(restarted.failed(reason: "SinkUnavailable", message: "down", now: 1, unitRandom: 0.999) == .retry(after: backoff.delay(attempt: 5, unitRandom: 0.999)))
        #expect(restarted.failures == 5)
        restarted.progressed(caughtUp: false, advanced: true, now: 2)
        #expect(restarted.failures == 0)
    }

    @Test func pausingIsNotAFailure() {
        var lifecycle = ProductLifecycle(now: 0)
        _ = lifecycle.failed(reason: "SinkUnavailable", message: "x", now: 1, unitRandom: 0)
        lifecycle.pausedByRequest(now: 2)
        #expect(lifecycle.phase == .paused)
        #expect(lifecycle.failures == 0)
        #expect(lifecycle.conditions(now: 2).allSatisfy { !$0.isTrue })
    }

    @Test func failuresStallWithTheReasonAndBackOffUntilProgressRecovers() {
        var lifecycle = ProductLifecycle(now: 0, backoff: RetryBackoff(initial: .seconds(1), cap: .seconds(8)))
        lifecycle.provisioningStarted(now: 0)
        var delays: [Duration] = []
        for attempt in 1...5 {
            let action = lifecycle.failed(reason: "SinkUnavailable", message: "disk full", now: Int64(attempt) * 1000, unitRandom: 0.5)
            guard case .retry(let delay) = action else { Issue.record("expected a retry"); return }
            delays.append(delay)
        }
        #expect(delays == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(4)])
        #expect(lifecycle.phase == .failed)
        let stalled = lifecycle.conditions(now: 5000).first { $0.type == "Stalled" }
        #expect(stalled?.isTrue == true)
        #expect(stalled?.reason == "SinkUnavailable")
        #expect(stalled?.message.contains("disk full") == true)
        #expect(stalled?.lastTransitionTime == Timestamp.format(1000))  // the transition, not the latest retry
        // A retry re-provisions but keeps reporting the failure until it makes progress.
        lifecycle.provisioningStarted(now: 6000)
        #expect(lifecycle.phase == .failed)
        // Its first report, before it has written anything, changes nothing either.
        lifecycle.progressed(caughtUp: false, advanced: false, now: 6500)
        #expect(lifecycle.phase == .failed)
        #expect(lifecycle.failures == 5)
        lifecycle.progressed(caughtUp: true, advanced: true, now: 7000)
        #expect(lifecycle.phase == .live)
        #expect(lifecycle.failures == 0)
        #expect(lifecycle.conditions(now: 7000).first { $0.type == "Stalled" }?.isTrue == false)
        // The backoff starts over after a recovery.
        guard case .retry(let delay) = lifecycle.failed(reason: "SinkUnavailable", message: "again", now: 8000, unitRandom: 0.5) else {
            Issue.record("expected a retry")
            return
        }
        #expect(delay == .milliseconds(500))
    }
}
