/// Where a product is in its life.
public enum ProductPhase: String, Sendable, Codable, CaseIterable {
    case pending = "Pending"
    case provisioning = "Provisioning"
    case backfilling = "Backfilling"
    case live = "Live"
    case paused = "Paused"
    case failed = "Failed"
}

/// A Kubernetes-style condition: `Ready`, `Reconciling` or `Stalled`, with a PascalCase
/// reason and a human message.
public struct Condition: Sendable, Equatable, Codable {
    public var type: String
    /// "True" or "False".
    public var status: String
    public var reason: String
    public var message: String
    public var lastTransitionTime: String

    public init(type: String, status: Bool, reason: String, message: String, lastTransitionTime: String) {
        self.type = type
        self.status = status ? "True" : "False"
        self.reason = reason
        self.message = message
        self.lastTransitionTime = lastTransitionTime
    }

    public var isTrue: Bool { status == "True" }
}

public struct ProductStatus: Sendable, Equatable, Codable {
    public var phase: ProductPhase
    public var observedGeneration: Int
    /// Source records between the checkpoint and the log end.
    public var lag: Int64
    public var recordsWritten: Int64
    public var deadLettered: Int64
    public var conditions: [Condition]
    /// The first event time included, when the backfill is bounded.
    public var backfillStart: String?
    /// Where the output is, with no secrets.
    public var output: String?
    /// Source partition → next offset, as committed with the output.
    public var checkpoint: [String: Int64]
    public var deadLetterTopic: String?
    /// For a product with joins: records that arrived after the outputs they belonged to
    /// had been made (later than `maxDelay`); they are joined with what came after them.
    public var lateRecords: Int64?
    /// Records retention removed before the product read them, which it was told to skip
    /// (`resume --accept-loss`).
    public var recordsLostToRetention: Int64?
    /// Consecutive failures since the product last made progress; survives restarts.
    public var failures: Int?
    /// Source records the current build read (filtered out ones too).
    public var recordsRead: Int64?
    /// The event time of the newest record delivered: now minus it is how stale the output is.
    public var newestDeliveredTime: String?

    public init(phase: ProductPhase = .pending, observedGeneration: Int = 0, lag: Int64 = 0, recordsWritten: Int64 = 0,
                deadLettered: Int64 = 0, conditions: [Condition] = [], backfillStart: String? = nil, output: String? = nil,
                checkpoint: [String: Int64] = [:], deadLetterTopic: String? = nil)
    {
        self.phase = phase
        self.observedGeneration = observedGeneration
        self.lag = lag
        self.recordsWritten = recordsWritten
        self.deadLettered = deadLettered
        self.conditions = conditions
        self.backfillStart = backfillStart
        self.output = output
        self.checkpoint = checkpoint
        self.deadLetterTopic = deadLetterTopic
    }

    public func condition(_ type: String) -> Condition? {
        conditions.first { $0.type == type }
    }
}
