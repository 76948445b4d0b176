import ProvisionPipeline

/// What one attempt to deliver a request came to.
enum WebhookResponse: Sendable, Equatable {
    case status(Int, retryAfter: Duration?, excerpt: String)
    case timedOut
    case connectionFailed(String)
}

/// The retry rules for one request to a webhook, as a plain value: attempts go in with the
/// time, decisions come out, and the sink only carries them out. Tested with a fake clock.
///
/// 2xx is delivered. 408, 429, 5xx, timeouts and connection errors are retried with capped
/// exponential backoff and full jitter, waiting at least what `Retry-After` asks (up to the
/// cap). Any other status dead-letters the records at once. After `maxAttempts` retryable
/// failures the records are dead-lettered only if the endpoint accepted other requests
/// meanwhile (it works, these records do not); if it accepted nothing, it is the endpoint
/// that is down: the request keeps being retried, and once nothing has been accepted for
/// `unavailableAfter` the product stalls and probes later, with nothing dead-lettered.
struct WebhookDelivery: Sendable, Equatable {
    enum Decision: Sendable, Equatable {
        case delivered
        case retry(after: Duration)
        case deadLetter(reason: String)
        case stall(reason: String)
    }

    let maxAttempts: Int
    let backoff: RetryBackoff
    let unavailableAfter: Duration
    private(set) var attempts = 0
    private var firstAttempt: ContinuousClock.Instant?

    init(maxAttempts: Int, backoff: RetryBackoff, unavailableAfter: Duration) {
        self.maxAttempts = maxAttempts
        self.backoff = backoff
        self.unavailableAfter = unavailableAfter
    }

    /// - Parameters:
    ///   - now: the time of the answer.
    ///   - lastSuccess: when the endpoint last accepted a request (or the sink started).
    ///   - unitRandom: a number in [0, 1) for the jitter; tests pass a fixed one.
    mutating func attempted(_ response: WebhookResponse, now: ContinuousClock.Instant, lastSuccess: ContinuousClock.Instant,
                            unitRandom: Double) -> Decision
    {
        attempts += 1
        let startedAt = firstAttempt ?? now
        firstAttempt = startedAt
        let problem: String
        var retryAfter: Duration?
        switch response {
        case .status(let status, _, _) where (200..<300).contains(status):
            return .delivered
        case .status(let status, let after, let excerpt) where status == 408 || status == 429 || status >= 500:
            problem = "status \(status)\(excerpt.isEmpty ? "" : ": \(excerpt)")"
            retryAfter = after
        case .status(let status, _, let excerpt):
            return .deadLetter(reason: "the endpoint refused the records: status \(status)\(excerpt.isEmpty ? "" : ": \(excerpt)") (attempt \(attempts))")
        case .timedOut:
            problem = "no answer within the timeout"
        case .connectionFailed(let message):
            problem = message
        }
        if now - lastSuccess >= unavailableAfter {
            return .stall(reason: "the endpoint has accepted nothing for \(unavailableAfter): \(problem)")
        }
        if attempts >= maxAttempts, lastSuccess > startedAt {
            return .deadLetter(reason: "undelivered after \(attempts) attempts: \(problem)")
        }
        var delay = backoff.delay(attempt: attempts, unitRandom: unitRandom)
        if let retryAfter { delay = max(delay, min(retryAfter, backoff.cap)) }
        return .retry(after: delay)
    }
}
