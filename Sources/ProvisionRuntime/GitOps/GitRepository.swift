import Foundation
import ProvisionModel
import Subprocess

/// A git command that failed or ran out of time.
struct GitCommandFailed: Error, CustomStringConvertible {
    var command: String
    var message: String

    var description: String { "git \(command): \(message)" }
}

/// A source's repository: a bare clone under the data directory, driven through the `git`
/// CLI (never a shell), each command bounded in time and in the output it may return.
struct GitRepository: Sendable {
    /// Where the bare clone lives.
    let directory: String
    let url: String
    var timeout: Duration = .seconds(60)
    var outputBytesMax = 64 * 1024 * 1024
    /// Sent as HTTP basic authentication through git's configuration in the environment:
    /// never on a command line, which every process on the machine can read.
    var credentials: (username: String, password: String)?

    /// Clones the repository the first time, then fetches every branch and tag into it.
    func fetch() async throws {
        if FileManager.default.fileExists(atPath: directory + "/HEAD") {
            // From the URL, not the clone's remote: a source whose URL changed fetches the new one.
            _ = try await git(["-C", directory, "fetch", "--quiet", "--prune", "--force", "--", url,
                               "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
        } else {
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(atPath: (directory as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            _ = try await git(["clone", "--bare", "--quiet", "--", url, directory])
        }
    }

    /// The commit a branch, tag or commit id names.
    func resolve(_ ref: String) async throws -> String {
        guard !ref.hasPrefix("-") else { throw GitCommandFailed(command: "rev-parse", message: "'\(ref)' is not a ref") }
        for candidate in ["refs/heads/\(ref)", "refs/tags/\(ref)", ref] {
            if let commit = try? await git(["-C", directory, "rev-parse", "--verify", "--quiet", "\(candidate)^{commit}"]) {
                return commit.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        throw GitCommandFailed(command: "rev-parse", message: "no branch, tag or commit '\(ref)' in \(PostgresURL.redact(url))")
    }

    /// The `.yaml`/`.yml` files under `path` at `commit`, named by their path in the
    /// repository; nil when the commit has no such path.
    func specFiles(at commit: String, under path: String) async throws -> [SpecFile]? {
        let root = path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !root.isEmpty, root != "." {
            guard (try? await git(["-C", directory, "cat-file", "-e", "\(commit):\(root)"])) != nil else { return nil }
        }
        let listing = try await git(["-C", directory, "ls-tree", "-r", "-z", "--name-only", commit, "--"]
                                    + (root.isEmpty || root == "." ? [] : [root]))
        let names = listing.split(separator: "\0").map(String.init).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        guard !names.isEmpty else { return [] }
        // Every file in one `git cat-file --batch`: one process, not one per file.
        let output = try await execute(["-C", directory, "cat-file", "--batch"],
                                       input: names.map { "\(commit):\($0)\n" }.joined())
        return try Self.blobs(output, names: names)
    }

    /// Splits `git cat-file --batch` output (`<oid> blob <size>\n<content>\n` per object) into
    /// the files it holds, in the order asked for.
    static func blobs(_ output: [UInt8], names: [String]) throws -> [SpecFile] {
        var files: [SpecFile] = []
        var position = 0
        for name in names {
            guard let newline = output[position...].firstIndex(of: UInt8(ascii: "\n")) else {
                throw GitCommandFailed(command: "cat-file", message: "the answer for \(name) is cut short")
            }
            let header = String(decoding: output[position..<newline], as: UTF8.self).split(separator: " ")
            guard header.count == 3, header[1] == "blob", let size = Int(header[2]), newline + 1 + size <= output.count else {
                throw GitCommandFailed(command: "cat-file", message: "no file \(name) in the commit (\(header.joined(separator: " ")))")
            }
            let content = output[(newline + 1)..<(newline + 1 + size)]
            files.append(SpecFile(name: name, content: String(decoding: content, as: UTF8.self)))
            position = newline + 1 + size + 1
        }
        return files
    }

    /// Runs git with `arguments`; its standard output, or a failure with its standard error.
    private func git(_ arguments: [String]) async throws -> String {
        String(decoding: try await execute(arguments, input: nil), as: UTF8.self)
    }

    /// Runs git with `arguments` and `input` on its standard input, at most `timeout`; its
    /// standard output (at most `outputBytesMax`).
    private func execute(_ arguments: [String], input: String?) async throws -> [UInt8] {
        let command = arguments.first { !$0.hasPrefix("-") && $0 != directory } ?? "git"
        let limit = outputBytesMax
        let timeout = self.timeout
        // Never a prompt for credentials: a source that needs them names them.
        var settings: [Environment.Key: String?] = ["GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"]
        if let credentials {
            let basic = Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString()
            settings["GIT_CONFIG_COUNT"] = "1"
            settings["GIT_CONFIG_KEY_0"] = "http.extraHeader"
            settings["GIT_CONFIG_VALUE_0"] = "Authorization: Basic \(basic)"
        }
        let environment = Environment.inherit.updating(settings)
        return try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
            group.addTask {
                let status: TerminationStatus
                let output: [UInt8]
                let errors: String
                if let input {
                    let result = try await run(.name("git"), arguments: Arguments(arguments), environment: environment,
                                               input: .string(input), output: .bytes(limit: limit), error: .string(limit: 64 * 1024))
                    (status, output, errors) = (result.terminationStatus, result.standardOutput, result.standardError)
                } else {
                    let result = try await run(.name("git"), arguments: Arguments(arguments), environment: environment,
                                               output: .bytes(limit: limit), error: .string(limit: 64 * 1024))
                    (status, output, errors) = (result.terminationStatus, result.standardOutput, result.standardError)
                }
                guard status.isSuccess else {
                    let message = errors.trimmingCharacters(in: .whitespacesAndNewlines)
                    throw GitCommandFailed(command: command, message: message.isEmpty ? "\(status)" : message)
                }
                return output
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let output = try await group.next() ?? nil else {
                throw GitCommandFailed(command: command, message: "took longer than \(timeout)")
            }
            return output
        }
    }
}
