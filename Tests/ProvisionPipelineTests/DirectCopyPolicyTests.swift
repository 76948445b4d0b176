import Testing
@testable import ProvisionSinks

@Suite struct DirectCopyPolicyTests {
    /// Which of the next `count` large batches try a direct COPY.
    private func tries(_ policy: inout DirectCopyPolicy, _ count: Int) -> [Bool] {
        (0..<count).map { _ in policy.shouldTry() }
    }

    @Test func triesEveryBatchWhileKeysAreNew() {
        var policy = DirectCopyPolicy()
        for _ in 0..<5 {
            let tried = policy.shouldTry()
            #expect(tried)
            policy.succeeded()
        }
    }

    @Test func backsOffExponentiallyAfterMissesAndResetsOnAHit() {
        var policy = DirectCopyPolicy()
        #expect(tries(&policy, 1) == [true])
        policy.failed()
        #expect(tries(&policy, 2) == [false, true])
        policy.failed()
        #expect(tries(&policy, 3) == [false, false, true])
        policy.failed()
        #expect(tries(&policy, 5) == [false, false, false, false, true])
        policy.succeeded()
        policy.failed()
        #expect(tries(&policy, 2) == [false, true])
    }

    @Test func theBackoffIsCapped() {
        var policy = DirectCopyPolicy()
        for _ in 0..<20 {
            _ = tries(&policy, DirectCopyPolicy.skipMax + 1)
            policy.failed()
        }
        #expect(policy.skipNext == DirectCopyPolicy.skipMax)
    }
}
