/// Capped exponential backoff with full jitter: attempt n waits a random time in
/// [0, min(cap, initial × 2ⁿ⁻¹)], which spreads retries of many products apart.
public struct RetryBackoff: Sendable, Equatable {
    public var initial: Duration
    public var cap: Duration

    public init(initial: Duration = .milliseconds(500), cap: Duration = .seconds(30)) {
        self.initial = initial
        self.cap = cap
    }

    /// The ceiling for `attempt` (1-based), before jitter.
    public func ceiling(attempt: Int) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let grown = initial * (1 << exponent)
        return min(grown, cap)
    }

    /// - Parameter unitRandom: a number in [0, 1); tests pass a fixed one.
    public func delay(attempt: Int, unitRandom: Double) -> Duration {
        ceiling(attempt: attempt) * max(0, min(unitRandom, 1))
    }
}
