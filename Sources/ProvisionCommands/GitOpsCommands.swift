import ArgumentParser
import Foundation
import ProvisionModel

struct GitOpsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gitops",
        abstract: "The git sources the server follows (applied as GitSource specs): their status, a sync now, suspend and resume, an approval of a commit's deletions.",
        subcommands: [GitOpsListCommand.self, GitOpsSyncCommand.self, GitOpsSuspendCommand.self, GitOpsResumeCommand.self,
                      GitOpsApproveCommand.self, GitOpsDeleteCommand.self])
}

/// A source's status as a table, with why it waits and what it reports.
enum GitSourceTable {
    static func render(_ sources: [GitSourceStatus]) -> String {
        let rows = sources.map { source -> [String] in
            let ready = source.conditions.first { $0.type == "Ready" }
            return [source.name, source.team ?? "-", "\(source.url)#\(source.ref):\(source.path)",
                    source.lastFetchedCommit.map { String($0.prefix(12)) } ?? "-",
                    source.lastAppliedCommit.map { String($0.prefix(12)) } ?? "-",
                    source.suspended ? "Suspended" : ready.map { $0.isTrue ? "Ready" : $0.reason } ?? "-"]
        }
        var text = TextTable.render([["NAME", "TEAM", "REPOSITORY", "FETCHED", "APPLIED", "STATE"]] + rows)
        for source in sources {
            if let message = source.conditions.first(where: { $0.type == "Stalled" && $0.isTrue })?.message { text += "\(source.name): \(message)\n" }
            for error in source.errors ?? [] { text += "  \(error)\n" }
            for conflict in source.conflicts ?? [] { text += "  conflict: \(conflict)\n" }
            for drift in source.drift ?? [] {
                text += "  drift: \(drift.kind.rawValue) \(drift.name) changed by \(drift.changedBy) (\(drift.fields.map(\.path).joined(separator: ", "))): \(drift.reverted ? "reverted" : "left as it is")\n"
            }
            for kept in source.keptFromPrune ?? [] { text += "  kept (provision/prune: disabled): \(kept)\n" }
        }
        return text
    }
}

/// `POST /v1/sources/NAME/ACTION`, printing `done` when the server answers `expected`.
private func sourceAction(_ options: ClientOptions, _ source: String, _ action: String, body: Data? = nil, expected: Int = 200,
                          done: String) async throws
{
    let reply = try await options.client.send(.POST, "/v1/sources/\(source.urlComponentEncoded)/\(action)", body: body)
    guard reply.status == expected else {
        printError(reply.errorMessage)
        throw ExitCode(1)
    }
    print(done)
}

struct GitOpsSuspendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "suspend", abstract: "Stop syncing the source; its products keep running.")

    @Argument(help: "The source's name.")
    var source: String

    @OptionGroup var options: ClientOptions

    func run() async throws { try await sourceAction(options, source, "suspend", done: "source/\(source) suspended") }
}

struct GitOpsResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Sync the source again, at once.")

    @Argument(help: "The source's name.")
    var source: String

    @OptionGroup var options: ClientOptions

    func run() async throws { try await sourceAction(options, source, "resume", done: "source/\(source) resumed") }
}

struct GitOpsDeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Stop following the source. Its products stay, still managed by it: a source of that name picks them up again.")

    @Argument(help: "The source's name.")
    var source: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let reply = try await options.client.send(.DELETE, "/v1/sources/\(source.urlComponentEncoded)")
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("source/\(source) deleted; its products keep running")
    }
}

struct GitOpsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Each source: what it last fetched and applied, and why it waits.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let sources = try await options.client.call(.GET, "/v1/sources", as: [GitSourceStatus].self)
        print(GitSourceTable.render(sources), terminator: "")
    }
}

struct GitOpsSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sync", abstract: "Fetch and apply the source now.")

    @Argument(help: "The source's name.")
    var source: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await sourceAction(options, source, "sync", expected: 202, done: "source/\(source) syncing")
    }
}

struct GitOpsApproveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve", abstract: "Let the source apply a commit that deletes more than its policy allows (an admin token is needed).")

    @Argument(help: "The source's name.")
    var source: String

    @Argument(help: "The commit, as its status names it.")
    var commit: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let body = try JSONEncoder().encode(ApproveSyncRequest(commit: commit))
        try await sourceAction(options, source, "approve", body: body, expected: 202, done: "source/\(source): commit \(commit) approved")
    }
}
