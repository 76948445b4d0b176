import ProvisionModel
import Testing
@testable import ProvisionControl

@Suite struct GitSyncDecisionTests {
    private let policy = GitSyncPolicy()
    private let owned: Set<String> = ["a", "b", "c", "d"]

    private func deleting(_ names: String...) -> [PlannedChange] {
        names.map { PlannedChange(kind: .dataProduct, name: $0, action: .delete) }
    }

    @Test func anInvalidRevisionAppliesNothing() {
        let error = SpecError(file: "products/a.yaml", line: 3, column: 9, path: "spec.where", message: "unknown field 'amout'")
        #expect(policy.decide(commit: "c1", specFiles: 4, errors: [error], changes: [], owned: owned, approved: nil) == .rejected([error]))
        // Not even with an approval: an approval is of deletions, not of errors.
        #expect(policy.decide(commit: "c1", specFiles: 4, errors: [error], changes: deleting("a"), owned: owned, approved: "c1")
                == .rejected([error]))
    }

    @Test func aFewDeletionsApplyAndManyWaitForAnApprovalOfThatCommit() {
        #expect(policy.decide(commit: "c2", specFiles: 3, errors: [], changes: deleting("a"), owned: owned, approved: nil) == .apply)
        #expect(policy.decide(commit: "c2", specFiles: 2, errors: [], changes: deleting("a", "b"), owned: owned, approved: nil) == .apply)
        let many = policy.decide(commit: "c3", specFiles: 1, errors: [], changes: deleting("c", "a", "b"), owned: owned, approved: nil)
        #expect(many == .pruneBlocked(deleting: ["a", "b", "c"], reason: "it would delete 3 of the 4 products the source manages, more than 50%"))
        #expect(policy.decide(commit: "c3", specFiles: 1, errors: [], changes: deleting("c", "a", "b"), owned: owned, approved: "c3") == .apply)
        // An approval is of one commit: the next one is judged again.
        #expect(policy.decide(commit: "c4", specFiles: 1, errors: [], changes: deleting("c", "a", "b"), owned: owned, approved: "c3")
                != .apply)
        let stricter = GitSyncPolicy(pruneFractionMax: 0.2)
        #expect(stricter.decide(commit: "c2", specFiles: 3, errors: [], changes: deleting("a"), owned: owned, approved: nil)
                == .pruneBlocked(deleting: ["a"], reason: "it would delete 1 of the 4 products the source manages, more than 20%"))
    }

    @Test func anEmptiedOrMissingPathOrDeletingEverythingIsBlocked() {
        let all = deleting("a", "b", "c", "d")
        guard case .pruneBlocked(_, let missing) = policy.decide(commit: "c5", specFiles: nil, errors: [], changes: all, owned: owned, approved: nil),
            case .pruneBlocked(_, let empty) = policy.decide(commit: "c5", specFiles: 0, errors: [], changes: all, owned: owned, approved: nil)
        else { Issue.record("a missing or empty path was not blocked"); return }
        #expect(missing.contains("path is missing") && empty.contains("holds no spec"))
        // Everything, even when the threshold would allow it.
        let lenient = GitSyncPolicy(pruneFractionMax: 1)
        #expect(lenient.decide(commit: "c6", specFiles: 2, errors: [], changes: deleting("a"), owned: ["a"], approved: nil)
                == .pruneBlocked(deleting: ["a"], reason: "it would delete every product the source manages (1)"))
    }

    @Test func aRevisionThatChangesNothingIsUnchanged() {
        let same = [PlannedChange(kind: .dataProduct, name: "a", action: .unchanged)]
        #expect(policy.decide(commit: "c7", specFiles: 1, errors: [], changes: same, owned: ["a"], approved: nil) == .unchanged)
        // A path emptied while the source manages nothing deletes nothing: nothing to block.
        #expect(policy.decide(commit: "c8", specFiles: 0, errors: [], changes: [], owned: [], approved: nil) == .unchanged)
    }
}
