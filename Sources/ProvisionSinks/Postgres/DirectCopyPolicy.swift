/// When to try loading a batch with a plain COPY into the table before merging it. A try
/// that meets a key already in the table is wasted work, so after each such miss the sink
/// merges for twice as many batches before trying again (up to 64); a hit resets it.
struct DirectCopyPolicy: Equatable {
    static let skipMax = 64

    private(set) var skipNext = 0
    private var skipAfterMiss = 1

    /// True when the next large batch should try a direct COPY; counts a skipped batch.
    mutating func shouldTry() -> Bool {
        guard skipNext == 0 else {
            skipNext -= 1
            return false
        }
        return true
    }

    mutating func succeeded() {
        skipAfterMiss = 1
    }

    mutating func failed() {
        skipNext = skipAfterMiss
        skipAfterMiss = min(skipAfterMiss * 2, Self.skipMax)
    }
}
