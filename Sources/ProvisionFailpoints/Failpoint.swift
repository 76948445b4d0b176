#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Named points in the code where a test stops the server on purpose, at the moment that
/// matters ("after the 3rd batch of the rebuild", "between the rename and its commit"),
/// instead of racing a poll against the work. The pattern of fail-rs and FoundationDB's
/// buggify: off unless switched on, and then cheap to pass.
///
/// Switched on by the environment of the process:
///
///     PROVISION_FAILPOINTS="postgres.swap.renamed=kill;pipeline.batch.committed=kill@3"
///
/// `kill` sends the process SIGKILL the first time the point is reached, `kill@N` the N-th
/// time (counted from the start of the process). Before it dies the process writes
/// `failpoint NAME reached (N): SIGKILL` to standard error, so a test can tell that it died
/// where it meant to. Every name the code uses is in `Failpoint.Name`.
public enum Failpoint {
    public enum Name: String, CaseIterable, Sendable {
        /// A pipeline committed a batch: output and checkpoint are durable.
        case batchCommitted = "pipeline.batch.committed"
        /// The PostgreSQL sink wrote a batch's rows and checkpoint in a transaction not yet
        /// committed.
        case postgresBatchUncommitted = "postgres.batch.uncommitted"
        /// The PostgreSQL sink renamed the rebuilt table into place, in the transaction that
        /// also moves its checkpoint row, before that transaction commits.
        case postgresSwapRenamed = "postgres.swap.renamed"
        /// The swap's transaction committed; the sink has not yet moved on.
        case postgresSwapCommitted = "postgres.swap.committed"
        /// The PostgreSQL sink added columns for a widening rebuild (committed), before any
        /// row was refilled.
        case postgresColumnsAdded = "postgres.columns.added"
        /// The Elasticsearch sink's bulk request succeeded; its checkpoint is not yet saved.
        case elasticsearchBulkIndexed = "elasticsearch.bulk.indexed"
        /// The rebuilt index has caught up; the alias still points at the old one.
        case elasticsearchAliasBeforeMove = "elasticsearch.alias.before-move"
        /// The alias points at the rebuilt index; the old index is not yet deleted.
        case elasticsearchAliasMoved = "elasticsearch.alias.moved"
        /// The file sink synced a batch's bytes; the checkpoint with the new length is not
        /// yet saved.
        case fileBatchSynced = "file.batch.synced"
        /// The webhook sink delivered a batch; its checkpoint is not yet saved.
        case webhookBatchDelivered = "webhook.batch.delivered"
        /// The reconciler removed a rebuilt product's previous output; the control state does
        /// not yet say so.
        case previousOutputRemoved = "reconciler.previous-output.removed"
        /// The embedded log wrote half of one append's bytes (a torn write, as a crash or a
        /// power cut leaves it); they are not yet synced.
        case logAppendTorn = "log.append.torn"
        /// The control store wrote half of one commit's bytes; they are not yet synced and
        /// the writer has no answer.
        case storeCommitTorn = "store.commit.torn"
        /// The control store synced a commit; the writer has no answer yet.
        case storeCommitSynced = "store.commit.synced"
        /// The control store wrote its compacted copy; it has not yet replaced the log.
        case storeCompactionWritten = "store.compaction.written"
    }

    /// Called where the named moment happens. Costs one load and a branch when off.
    @inline(__always)
    public static func reached(_ name: Name) {
        guard let armed else { return }
        armed.reach(name, beforeKill: {})
    }

    /// The same, running `beforeKill` just before the process dies there (to leave the
    /// state a crash at that moment leaves, such as half a write).
    @inline(__always)
    public static func reached(_ name: Name, beforeKill: () -> Void) {
        guard let armed else { return }
        armed.reach(name, beforeKill: beforeKill)
    }

    private static let armed: Armed? = {
        guard let text = getenv("PROVISION_FAILPOINTS").map({ String(cString: $0) }), !text.isEmpty else { return nil }
        return Armed(parsing: text)
    }()

    /// The failpoints switched on and how often each was reached.
    private final class Armed: Sendable {
        private let killAt: [Name: Int]
        private let counts = Mutex<[Name: Int]>([:])

        init(parsing text: String) {
            var killAt: [Name: Int] = [:]
            for entry in text.split(separator: ";") {
                let parts = entry.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters() }
                guard parts.count == 2, let name = Name(rawValue: parts[0]) else {
                    Self.say("PROVISION_FAILPOINTS: unknown failpoint '\(entry)'; known: \(Name.allCases.map(\.rawValue).joined(separator: ", "))")
                    continue
                }
                let action = parts[1].split(separator: "@")
                guard action.first == "kill", let count = action.count == 2 ? Int(action[1]) : 1, count > 0 else {
                    Self.say("PROVISION_FAILPOINTS: '\(entry)' must be NAME=kill or NAME=kill@N")
                    continue
                }
                killAt[name] = count
            }
            self.killAt = killAt
        }

        func reach(_ name: Name, beforeKill: () -> Void) {
            guard let target = killAt[name] else { return }
            let count = counts.withLock { counts in
                counts[name, default: 0] += 1
                return counts[name]!
            }
            guard count == target else { return }
            beforeKill()
            Self.say("failpoint \(name.rawValue) reached (\(count)): SIGKILL")
            kill(getpid(), SIGKILL)
        }

        /// Straight to the file descriptor: nothing buffered is lost to the kill.
        private static func say(_ line: String) {
            let text = line + "\n"
            _ = text.withCString { write(2, $0, strlen($0)) }
        }
    }
}

private extension Substring {
    func trimmingCharacters() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
