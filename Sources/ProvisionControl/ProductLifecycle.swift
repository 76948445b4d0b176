import ProvisionPipeline
import ProvisionModel

/// The per-product lifecycle as a plain value: events go in, the phase and conditions come
/// out, and the supervisor that owns the I/O only executes the returned actions. Tested
/// with a fake clock.
public struct ProductLifecycle: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case pending
        case provisioning
        case running(caughtUp: Bool)
        case failing(reason: String, message: String)
        /// Stopped until a person acts (records lost to retention): not retried.
        case stopped(reason: String, message: String)
        case paused
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Run the pipeline again after this delay.
        case retry(after: Duration)
    }

    public private(set) var state: State = .pending
    /// Consecutive failures since the last progress.
    public private(set) var failures = 0
    public private(set) var lastTransition: TimestampMilliseconds
    public let backoff: RetryBackoff

    /// - Parameter failures: consecutive failures so far (kept in status), so that a restart
    ///   does not retry a broken sink at the fastest rate again.
    public init(now: TimestampMilliseconds, backoff: RetryBackoff = .init(), failures: Int = 0) {
        lastTransition = now
        self.backoff = backoff
        self.failures = failures
    }

    private mutating func move(to newState: State, now: TimestampMilliseconds) {
        if newState != state { lastTransition = now }
        state = newState
    }

    public mutating func provisioningStarted(now: TimestampMilliseconds) {
        if case .failing = state { return }  // keep reporting the failure until progress proves recovery
        move(to: .provisioning, now: now)
    }

    /// The pipeline reported. `advanced` says whether its checkpoint moved since the last
    /// report; a failing product recovers only by moving (or having nothing to do): the
    /// report a retried pipeline makes when it starts proves nothing yet, and resetting the
    /// backoff on it would retry a broken sink as fast as it fails.
    public mutating func progressed(caughtUp: Bool, advanced: Bool, now: TimestampMilliseconds) {
        if case .failing = state, !advanced, !caughtUp { return }
        failures = 0
        move(to: .running(caughtUp: caughtUp), now: now)
    }

    public mutating func failed(reason: String, message: String, now: TimestampMilliseconds, unitRandom: Double) -> Action {
        failures += 1
        move(to: .failing(reason: reason, message: message), now: now)
        return .retry(after: backoff.delay(attempt: failures, unitRandom: unitRandom))
    }

    /// A failure no retry can fix: the product waits for a person, saying what to do.
    public mutating func stoppedForGood(reason: String, message: String, now: TimestampMilliseconds) {
        failures = 0
        move(to: .stopped(reason: reason, message: message), now: now)
    }

    /// The product was paused by request: its pipeline is stopped, its output kept.
    public mutating func pausedByRequest(now: TimestampMilliseconds) {
        failures = 0
        move(to: .paused, now: now)
    }

    public var phase: ProductPhase {
        switch state {
        case .pending: return .pending
        case .provisioning: return .provisioning
        case .running(let caughtUp): return caughtUp ? .live : .backfilling
        case .failing, .stopped: return .failed
        case .paused: return .paused
        }
    }

    public func conditions(now: TimestampMilliseconds) -> [Condition] {
        let time = Timestamp.format(lastTransition)
        switch state {
        case .pending:
            return [Condition(type: "Ready", status: false, reason: "Pending", message: "waiting to start", lastTransitionTime: time),
                    Condition(type: "Reconciling", status: true, reason: "Pending", message: "waiting to start", lastTransitionTime: time),
                    Condition(type: "Stalled", status: false, reason: "Pending", message: "", lastTransitionTime: time)]
        case .provisioning:
            return [Condition(type: "Ready", status: false, reason: "Provisioning", message: "provisioning the sink", lastTransitionTime: time),
                    Condition(type: "Reconciling", status: true, reason: "Provisioning", message: "provisioning the sink", lastTransitionTime: time),
                    Condition(type: "Stalled", status: false, reason: "Provisioning", message: "", lastTransitionTime: time)]
        case .running(let caughtUp):
            if caughtUp {
                return [Condition(type: "Ready", status: true, reason: "Live", message: "caught up; following new records", lastTransitionTime: time),
                        Condition(type: "Reconciling", status: false, reason: "Live", message: "", lastTransitionTime: time),
                        Condition(type: "Stalled", status: false, reason: "Live", message: "", lastTransitionTime: time)]
            }
            return [Condition(type: "Ready", status: false, reason: "Backfilling", message: "writing history", lastTransitionTime: time),
                    Condition(type: "Reconciling", status: true, reason: "Backfilling", message: "writing history", lastTransitionTime: time),
                    Condition(type: "Stalled", status: false, reason: "Backfilling", message: "", lastTransitionTime: time)]
        case .paused:
            return [Condition(type: "Ready", status: false, reason: "Paused", message: "paused by request; resume to continue from the checkpoint", lastTransitionTime: time),
                    Condition(type: "Reconciling", status: false, reason: "Paused", message: "", lastTransitionTime: time),
                    Condition(type: "Stalled", status: false, reason: "Paused", message: "", lastTransitionTime: time)]
        case .stopped(let reason, let message):
            return [Condition(type: "Ready", status: false, reason: reason, message: message, lastTransitionTime: time),
                    Condition(type: "Reconciling", status: false, reason: reason, message: "", lastTransitionTime: time),
                    Condition(type: "Stalled", status: true, reason: reason, message: message, lastTransitionTime: time)]
        case .failing(let reason, let message):
            let retrying = "\(message) (attempt \(failures); retrying with backoff)"
            return [Condition(type: "Ready", status: false, reason: reason, message: retrying, lastTransitionTime: time),
                    Condition(type: "Reconciling", status: true, reason: "RetryingWithBackoff", message: retrying, lastTransitionTime: time),
                    Condition(type: "Stalled", status: true, reason: reason, message: retrying, lastTransitionTime: time)]
        }
    }
}
