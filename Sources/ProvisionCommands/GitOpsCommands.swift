import ArgumentParser
import Foundation
import ProvisionModel

struct GitOpsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gitops", abstract: "The git sources the server follows: their status, a sync now, an approval of a commit's deletions.",
        subcommands: [GitOpsListCommand.self, GitOpsSyncCommand.self, GitOpsApproveCommand.self])
}

struct GitOpsListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Each source: what it last fetched and applied, and why it waits.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let sources = try await options.client.call(.GET, "/v1/sources", as: [GitSourceStatus].self)
        let rows = sources.map { source -> [String] in
            let ready = source.conditions.first { $0.type == "Ready" }
            return [source.name, "\(source.url)#\(source.ref):\(source.path)", source.lastFetchedCommit.map { String($0.prefix(12)) } ?? "-",
                    source.lastAppliedCommit.map { String($0.prefix(12)) } ?? "-", ready.map { $0.isTrue ? "Ready" : $0.reason } ?? "-"]
        }
        print(TextTable.render([["NAME", "REPOSITORY", "FETCHED", "APPLIED", "STATE"]] + rows), terminator: "")
        for source in sources {
            if let message = source.conditions.first(where: { $0.type == "Stalled" && $0.isTrue })?.message { print("\(source.name): \(message)") }
            for error in source.errors ?? [] { print("  \(error)") }
        }
    }
}

struct GitOpsSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sync", abstract: "Fetch and apply the source now.")

    @Argument(help: "The source's name.")
    var source: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let reply = try await options.client.send(.POST, "/v1/sources/\(source.urlComponentEncoded)/sync")
        guard reply.status == 202 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("source/\(source) syncing")
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
        let reply = try await options.client.send(.POST, "/v1/sources/\(source.urlComponentEncoded)/approve", body: body)
        guard reply.status == 202 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("source/\(source): commit \(commit) approved")
    }
}
