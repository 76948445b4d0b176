import ArgumentParser
import Foundation
import ProvisionModel

struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Create or update datasets and products from spec files.",
        discussion: "All files are checked together; any error applies nothing.")

    @Option(name: .shortAndLong, help: "A spec file or a directory of .yaml/.yml files.")
    var file: [String]

    @Flag(name: .long, help: "Print the plan (create / update / update-rebuild / unchanged / delete) and change nothing.")
    var dryRun = false

    @Flag(name: .long, help: "Delete products this writer manages that the files do not mention (never another's).")
    var prune = false

    @Flag(name: .long, help: "Take over datasets and products another writer manages.")
    var force = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let files = try SpecFiles.read(file)
        let body = try JSONEncoder().encode(ApplyRequest(files: files, dryRun: dryRun, prune: prune, force: force, managedBy: "cli"))
        let reply = try await options.client.send(.POST, "/v1/apply", body: body)
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        let response = try reply.decode(ApplyResponse.self)
        PlanPrinter.print(response.changes, fields: response.dryRun)
        for warning in response.warnings ?? [] { printError("warning: \(warning)") }
        if response.dryRun { print("dry run: nothing was changed") }
    }
}

/// Shows what the server plans to do without doing it: every object with its action, each
/// changed field with its value before and after, and whether the output is rebuilt.
/// Exits 0 when nothing would change, 1 when something would (as `kubectl diff` does), and
/// 2 when the specs are rejected.
struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Show what applying spec files would change, field by field, and change nothing.",
        discussion: "Exit status: 0 no changes, 1 changes, 2 the specs are rejected or the server cannot be reached.")

    @Option(name: .shortAndLong, help: "A spec file or a directory of .yaml/.yml files.")
    var file: [String]

    @Flag(name: .long, help: "Include the deletions that apply --prune would make.")
    var prune = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let response: ApplyResponse
        do {
            let files = try SpecFiles.read(file)
            let body = try JSONEncoder().encode(ApplyRequest(files: files, dryRun: true, prune: prune, managedBy: "cli"))
            let reply = try await options.client.send(.POST, "/v1/apply", body: body)
            guard reply.status == 200 else {
                printError(reply.errorMessage)
                throw ExitCode(2)
            }
            response = try reply.decode(ApplyResponse.self)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("\(error)")
            throw ExitCode(2)
        }
        PlanPrinter.print(response.changes, fields: true)
        for warning in response.warnings ?? [] { printError("warning: \(warning)") }
        if response.changes.contains(where: { $0.action != .unchanged }) { throw ExitCode(1) }
    }
}

enum PlanPrinter {
    static func print(_ changes: [PlannedChange], fields: Bool) {
        for change in changes {
            let detail = change.detail.map { " (\($0))" } ?? ""
            Swift.print("\(change.kind.rawValue.lowercased())/\(change.name) \(change.action.rawValue)\(detail)")
            guard fields else { continue }
            for field in change.fields ?? [] {
                Swift.print("    \(field.path): \(field.from ?? "(absent)") -> \(field.to ?? "(absent)")")
            }
            if change.action == .update || change.action == .updateRebuild {
                Swift.print("    output: \(change.rebuilds ? "rebuilt from the start of the backfill" : "kept (no rebuild)")")
            }
            if let backfill = change.backfill {
                Swift.print("    backfill: \(backfill.records) records (about \(backfill.bytesEstimate) bytes) since \(backfill.since ?? "the start of the log")")
            }
        }
    }
}

/// Reads spec files and directories, naming each file as the user wrote its path.
enum SpecFiles {
    static func read(_ paths: [String]) throws -> [SpecFile] {
        var files: [SpecFile] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw ValidationError("\(path) does not exist")
            }
            if isDirectory.boolValue {
                let names = try FileManager.default.contentsOfDirectory(atPath: path)
                    .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
                    .sorted()
                for name in names {
                    let full = path.hasSuffix("/") ? path + name : "\(path)/\(name)"
                    files.append(SpecFile(name: full, content: try String(contentsOfFile: full, encoding: .utf8)))
                }
            } else {
                files.append(SpecFile(name: path, content: try String(contentsOfFile: path, encoding: .utf8)))
            }
        }
        return files
    }
}
