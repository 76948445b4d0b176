import Synchronization
import ProvisionModel
import ProvisionPipeline

/// The keys waiting for reconciliation, as a plain value (controller-runtime's work queue):
///
/// - a key is queued at most once, however often it is added, so the queue is bounded by
///   the number of objects and a burst of changes to one product is one reconcile;
/// - a key being processed is never handed out again until `done`; added meanwhile, it is
///   queued again then, so the latest state is always reconciled once more;
/// - `failed` requeues a key after a per-key exponential backoff, `forget` resets it;
/// - `add(after:)` is a requeue at a later time (the earliest of several wins).
///
/// Time comes in as `now`, so it is tested with a fake clock.
public struct WorkQueue<Key: Hashable & Sendable>: Sendable {
    private var order: [Key] = []
    private var head = 0
    /// Keys that need a reconcile (in `order`, or processing and to be queued on `done`).
    private var queued: Set<Key> = []
    private var processing: Set<Key> = []
    private var waiting: [Key: TimestampMilliseconds] = [:]
    private var failures: [Key: Int] = [:]
    public let backoff: RetryBackoff

    public init(backoff: RetryBackoff = RetryBackoff(initial: .milliseconds(100), cap: .seconds(60))) {
        self.backoff = backoff
    }

    public mutating func add(_ key: Key) {
        guard queued.insert(key).inserted else { return }
        waiting[key] = nil
        if !processing.contains(key) { order.append(key) }
    }

    public mutating func add(_ key: Key, after delay: Duration, now: TimestampMilliseconds) {
        guard delay > .zero else { return add(key) }
        let due = now + Self.milliseconds(delay)
        if queued.contains(key) { return }  // it runs sooner anyway
        waiting[key] = min(waiting[key] ?? due, due)
    }

    /// The next key to reconcile, if one is ready; it is processing until `done`.
    public mutating func next(now: TimestampMilliseconds) -> Key? {
        promoteDue(now: now)
        while head < order.count {
            let key = order[head]
            head += 1
            if head > 1024, head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
            guard queued.remove(key) != nil else { continue }
            processing.insert(key)
            return key
        }
        return nil
    }

    /// Queues the requeues that are due.
    public mutating func promoteDue(now: TimestampMilliseconds) {
        for (key, due) in waiting where due <= now { add(key) }
    }

    public mutating func done(_ key: Key) {
        processing.remove(key)
        if queued.contains(key) { order.append(key) }
    }

    /// The reconcile of `key` failed: it runs again after a backoff that grows with each
    /// consecutive failure. Returns the delay.
    @discardableResult
    public mutating func failed(_ key: Key, now: TimestampMilliseconds, unitRandom: Double) -> Duration {
        let attempt = (failures[key] ?? 0) + 1
        failures[key] = attempt
        // Half fixed, half jitter: never an immediate retry, never in lockstep.
        let delay = backoff.ceiling(attempt: attempt) / 2 + backoff.delay(attempt: attempt, unitRandom: unitRandom) / 2
        add(key, after: delay, now: now)
        return delay
    }

    /// The key succeeded: its next failure starts the backoff again.
    public mutating func forget(_ key: Key) {
        failures[key] = nil
    }

    public func failureCount(_ key: Key) -> Int { failures[key] ?? 0 }

    /// When the earliest requeue falls due, if any.
    public var nextDue: TimestampMilliseconds? { waiting.values.min() }

    /// Keys ready now (not counting requeues that are not yet due).
    public var readyCount: Int { queued.filter { !processing.contains($0) }.count }

    public var isProcessing: Bool { !processing.isEmpty }

    private static func milliseconds(_ duration: Duration) -> TimestampMilliseconds {
        let (seconds, attoseconds) = duration.components
        return TimestampMilliseconds(seconds) * 1000 + TimestampMilliseconds(attoseconds / 1_000_000_000_000_000)
    }
}

/// The work queue shared by the reconcile workers: adding never waits (any code may ask for
/// a reconcile), `next` waits until a key is ready.
final class ReconcileQueue: Sendable {
    private struct Inner {
        var queue: WorkQueue<String>
        var waiters: [CheckedContinuation<Void, Never>] = []
        var finished = false
        var timer: Task<Void, Never>?
        var timerDue: TimestampMilliseconds?

        mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
            defer { waiters.removeAll() }
            return waiters
        }
    }

    private let inner: Mutex<Inner>
    private let clock: @Sendable () -> TimestampMilliseconds

    init(backoff: RetryBackoff, clock: @escaping @Sendable () -> TimestampMilliseconds) {
        inner = Mutex(Inner(queue: WorkQueue(backoff: backoff)))
        self.clock = clock
    }

    func add(_ name: String) {
        let waiters = inner.withLock { inner in
            inner.queue.add(name)
            return inner.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    func add(_ name: String, after delay: Duration) {
        let now = clock()
        inner.withLock { inner in
            inner.queue.add(name, after: delay, now: now)
            scheduleTimer(&inner, now: now)
        }
    }

    /// The reconcile failed: it runs again after the key's backoff, which is returned.
    @discardableResult
    func failed(_ name: String) -> Duration {
        let now = clock()
        return inner.withLock { inner in
            let delay = inner.queue.failed(name, now: now, unitRandom: Double.random(in: 0..<1))
            scheduleTimer(&inner, now: now)
            return delay
        }
    }

    func forget(_ name: String) { inner.withLock { $0.queue.forget(name) } }

    /// Whether the key's last reconcile failed and its retry waits for the backoff.
    func isBackingOff(_ name: String) -> Bool { inner.withLock { $0.queue.failureCount(name) > 0 } }

    /// The next product to reconcile; nil once the queue is finished.
    func next() async -> String? {
        while true {
            let now = clock()
            let taken: String?? = inner.withLock { inner in
                if inner.finished { return .some(nil) }
                if let name = inner.queue.next(now: now) { return .some(name) }
                scheduleTimer(&inner, now: now)
                return nil
            }
            if let taken { return taken }
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                // Checked again under the lock, so an add between the two is not missed.
                let ready = inner.withLock { inner -> Bool in
                    if inner.finished || inner.queue.readyCount > 0 { return true }
                    inner.waiters.append(waiter)
                    return false
                }
                if ready { waiter.resume() }
            }
        }
    }

    func done(_ name: String) {
        let waiters = inner.withLock { inner in
            inner.queue.done(name)
            return inner.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    func finish() {
        let waiters = inner.withLock { inner in
            inner.finished = true
            inner.timer?.cancel()
            return inner.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Wakes the workers when the earliest requeue falls due.
    private func scheduleTimer(_ inner: inout Inner, now: TimestampMilliseconds) {
        guard !inner.finished, let due = inner.queue.nextDue, due != inner.timerDue else { return }
        inner.timer?.cancel()
        inner.timerDue = due
        let delay = max(0, due - now)
        inner.timer = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(delay))
            if Task.isCancelled { return }
            self?.timerFired()
        }
    }

    private func timerFired() {
        let now = clock()
        let waiters = inner.withLock { inner in
            inner.timer = nil
            inner.timerDue = nil
            inner.queue.promoteDue(now: now)
            scheduleTimer(&inner, now: now)
            return inner.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }
}
