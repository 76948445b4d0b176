import ProvisionModel

/// What one sync of a git source does with the revision it fetched, decided from the
/// revision and the plan alone (no I/O), so that the safety rules Argo CD and Flux users ask
/// for are tested on their own: a bad revision applies nothing, and a revision that would
/// delete much of what the source manages waits for an approval of that commit.
public enum GitSyncDecision: Sendable, Equatable {
    /// Apply the plan (its deletions included).
    case apply
    /// The revision changes nothing the source manages.
    case unchanged
    /// The revision is invalid: nothing of it is applied, and the last good one stays.
    case rejected([SpecError])
    /// The revision would delete `deleting`; it waits until this commit is approved
    /// (`provisionctl gitops approve SOURCE COMMIT`).
    case pruneBlocked(deleting: [String], reason: String)
}

/// The rules of a sync, as plain values.
public struct GitSyncPolicy: Sendable, Equatable {
    /// A revision that deletes more than this share of the source's products is blocked.
    public var pruneFractionMax: Double

    public init(pruneFractionMax: Double = 0.5) {
        self.pruneFractionMax = pruneFractionMax
    }

    /// - Parameters:
    ///   - commit: the commit the revision is.
    ///   - specFiles: how many spec files the source's path holds in it (nil: the path is missing).
    ///   - errors: what validation and planning found wrong with it.
    ///   - changes: the plan of an apply of it, as this source, with pruning.
    ///   - owned: the products the source manages now.
    ///   - approved: the commit an operator approved the deletions of, if any.
    public func decide(commit: String, specFiles: Int?, errors: [SpecError], changes: [PlannedChange], owned: Set<String>,
                       approved: String?) -> GitSyncDecision
    {
        guard errors.isEmpty else { return .rejected(errors) }
        let deleting = changes.filter { $0.kind == .dataProduct && $0.action == .delete }.map(\.name).sorted()
        if !deleting.isEmpty, approved != commit, let reason = blockReason(specFiles: specFiles, deleting: deleting.count, owned: owned.count) {
            return .pruneBlocked(deleting: deleting, reason: reason)
        }
        return changes.allSatisfy({ $0.action == .unchanged }) ? .unchanged : .apply
    }

    /// Why deleting `deleting` of `owned` products needs an approval, or nil when it does not.
    private func blockReason(specFiles: Int?, deleting: Int, owned: Int) -> String? {
        guard let specFiles else { return "the source's path is missing from the commit: a renamed path would delete all \(owned) of its products" }
        if specFiles == 0 { return "the source's path holds no spec: it would delete all \(owned) of its products" }
        if deleting == owned { return "it would delete every product the source manages (\(owned))" }
        if Double(deleting) > pruneFractionMax * Double(owned) {
            return "it would delete \(deleting) of the \(owned) products the source manages, more than \(Int(pruneFractionMax * 100))%"
        }
        return nil
    }
}
