import Foundation
import Testing

/// A git repository in a temporary directory, changed and committed through the `git` CLI.
private final class TestRepository {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "provision-repo-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try git(["init", "--quiet", "--initial-branch=main"])
        try git(["config", "user.email", "tests@provision.invalid"])
        try git(["config", "user.name", "Provision tests"])
    }

    var url: String { "file://\(path)" }

    @discardableResult
    func git(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = ["-C", path] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        try waitForExit(process, timeout: .seconds(30), what: "git \(arguments.first ?? "")")
        guard process.terminationStatus == 0 else { throw Failure("git \(arguments.joined(separator: " ")) failed") }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func write(_ file: String, _ content: String) throws {
        let full = path + "/" + file
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try content.write(toFile: full, atomically: true, encoding: .utf8)
    }

    func remove(_ file: String) throws { try git(["rm", "--quiet", "--force", file]) }

    /// Commits everything; returns the commit.
    func commit(_ message: String) throws -> String {
        try git(["add", "--all"])
        try git(["commit", "--quiet", "--allow-empty", "-m", message])
        return try git(["rev-parse", "HEAD"])
    }

    deinit { removeTestData(path) }
}

private func gitProduct(_ name: String, threshold: Int = 1000) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: risk}
    spec:
      from: orders
      where: amount > \(threshold)
      select: {order_id: order_id, amount: amount}
      sink: {file: {path: git/\(name).jsonl}}
      deletionPolicy: Delete
    """
}

/// The server following a repository over `file://`, with the safety rules: a bad commit
/// applies nothing, a large prune waits for an approval, what the source did not create is
/// never touched, an unreachable repository leaves the products running.
@Suite(.serialized, .timeLimit(.minutes(6))) struct GitOpsTests {
    private func source(_ server: ServerProcess) async throws -> [String: Any] {
        try await httpRequest(.GET, server.url + "/v1/sources/git").json as? [String: Any] ?? [:]
    }

    private func waitForSource(_ server: ServerProcess, _ what: String, until condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(60)
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            last = try await source(server)
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Failure("the git source did not reach: \(what); last: \(last)")
    }

    private func reason(_ source: [String: Any]) -> String? {
        (source["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Ready" }?["reason"] as? String
    }

    @Test func theServerFollowsTheRepositoryAndRefusesWhatIsUnsafe() async throws {
        let repository = try TestRepository()
        try repository.write("specs/catalog.yaml", catalogSpec)
        for name in ["a", "b", "c", "d"] { try repository.write("specs/\(name).yaml", gitProduct("git-\(name)")) }
        try repository.write("elsewhere/ignored.yaml", gitProduct("git-ignored"))
        let first = try repository.commit("four products")
        let server = ServerProcess()
        server.arguments = ["--gitops", "\(repository.url)#main:specs", "--gitops-interval", "1s"]
        try await server.start()
        defer { server.stop() }
        // A product made by hand, with a name the repository does not have: never touched.
        let manual = gitProduct("by-hand").replacingOccurrences(of: "git/by-hand", with: "manual/by-hand")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, manual, to: server.dataDirectory + "-manual")]).status == 0)

        // Committed specs appear, managed by the source, and go Live (only those under the path).
        for name in ["a", "b", "c", "d"] {
            let product = try await server.waitForProduct("git-\(name)", timeout: .seconds(60)) { $0.phase == "Live" }
            #expect((product["metadata"] as? [String: Any])?["managedBy"] as? String == "gitops:git")
        }
        #expect(try await server.fetchProduct("git-ignored") == nil)
        _ = try await waitForSource(server, "commit \(first) applied") { $0["lastAppliedCommit"] as? String == first && reason($0) == "Synced" }

        // An edit rebuilds the product.
        try repository.write("specs/a.yaml", gitProduct("git-a", threshold: 2000))
        let edited = try repository.commit("a: a higher threshold")
        let rebuilt = try await server.waitForProduct("git-a", timeout: .seconds(60)) {
            ($0["spec"] as? [String: Any])?["where"] as? String == "amount > 2000"
        }
        #expect((rebuilt["metadata"] as? [String: Any])?["generation"] as? Int == 2)
        _ = try await waitForSource(server, "commit \(edited) applied") { $0["lastAppliedCommit"] as? String == edited }

        // An invalid spec: nothing of the commit applies, and the source says where.
        try repository.write("specs/b.yaml", gitProduct("git-b").replacingOccurrences(of: "amount > 1000", with: "amout > 1000"))
        try repository.write("specs/c.yaml", gitProduct("git-c", threshold: 3000))
        let broken = try repository.commit("b: a typo, c: a change")
        let refused = try await waitForSource(server, "commit \(broken) refused") {
            $0["lastFetchedCommit"] as? String == broken && reason($0) == "InvalidRevision"
        }
        let error = (refused["errors"] as? [[String: Any]])?.first
        #expect(error?["file"] as? String == "specs/b.yaml" && error?["line"] as? Int == 6 && error?["path"] as? String == "spec.where",
                "\(String(describing: error))")
        #expect(refused["lastAppliedCommit"] as? String == edited)
        #expect(((try await server.fetchProduct("git-c"))?["spec"] as? [String: Any])?["where"] as? String == "amount > 1000",
                "a change in a refused commit was applied")

        // Removing one of four prunes it.
        try repository.write("specs/b.yaml", gitProduct("git-b"))
        try repository.write("specs/c.yaml", gitProduct("git-c"))
        try repository.remove("specs/c.yaml")
        let pruned = try repository.commit("c goes")
        _ = try await waitForSource(server, "commit \(pruned) applied") { $0["lastAppliedCommit"] as? String == pruned }
        let deadline = ContinuousClock.now + .seconds(60)
        while try await server.fetchProduct("git-c") != nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try await server.fetchProduct("git-c") == nil)

        // Removing every spec is blocked until that commit is approved.
        for name in ["a", "b", "d"] { try repository.remove("specs/\(name).yaml") }
        let emptied = try repository.commit("everything goes")
        let blocked = try await waitForSource(server, "commit \(emptied) blocked") {
            $0["lastFetchedCommit"] as? String == emptied && reason($0) == "PruneBlocked"
        }
        #expect(blocked["wouldDelete"] as? [String] == ["git-a", "git-b", "git-d"])
        try await Task.sleep(for: .seconds(2))  // two more syncs: still nothing deleted
        for name in ["a", "b", "d"] { #expect(try await server.fetchProduct("git-\(name)") != nil) }
        let listed = try server.ctl(["gitops", "list"])
        #expect(listed.output.contains("PruneBlocked") && listed.output.contains("gitops approve git \(emptied)"), "\(listed.output)")
        #expect(try server.ctl(["gitops", "approve", "git", emptied]).status == 0)
        _ = try await waitForSource(server, "commit \(emptied) applied") { $0["lastAppliedCommit"] as? String == emptied }
        for name in ["a", "b", "d"] {
            let gone = ContinuousClock.now + .seconds(60)
            while try await server.fetchProduct("git-\(name)") != nil, ContinuousClock.now < gone { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await server.fetchProduct("git-\(name)") == nil)
        }

        // A renamed path is blocked like an emptied one (here: nothing left to delete, so applied).
        try repository.write("specs/a.yaml", gitProduct("git-a"))
        let back = try repository.commit("a is back")
        _ = try await server.waitForProduct("git-a", timeout: .seconds(60)) { $0.phase == "Live" }
        try repository.git(["mv", "specs", "products"])
        let renamed = try repository.commit("the path is renamed")
        let missing = try await waitForSource(server, "commit \(renamed) blocked") {
            $0["lastFetchedCommit"] as? String == renamed && reason($0) == "PruneBlocked"
        }
        #expect(((missing["conditions"] as? [[String: Any]])?.first?["message"] as? String)?.contains("path is missing") == true)
        #expect(missing["lastAppliedCommit"] as? String == back)

        // Unreachable: the source stalls, the products keep running.
        try FileManager.default.moveItem(atPath: repository.path, toPath: repository.path + "-gone")
        defer { try? FileManager.default.moveItem(atPath: repository.path + "-gone", toPath: repository.path) }
        _ = try await waitForSource(server, "a failed fetch") { reason($0) == "FetchFailed" }
        #expect(try await server.fetchProduct("git-a")?["status"].flatMap { ($0 as? [String: Any])?["phase"] as? String } == "Live")
        #expect(try await server.fetchProduct("by-hand") != nil, "a product the source did not create was touched")
    }

    /// With a long interval, a push hook (`POST /v1/sources/{name}/sync`) syncs at once.
    @Test func aPushHookSyncsAtOnce() async throws {
        let repository = try TestRepository()
        try repository.write("catalog.yaml", catalogSpec)
        _ = try repository.commit("the catalog")
        let server = ServerProcess()
        server.arguments = ["--gitops", repository.url, "--gitops-interval", "1h"]
        try await server.start()
        defer { server.stop() }
        _ = try await waitForSource(server, "the first sync") { reason($0) == "Synced" }
        try repository.write("hooked.yaml", gitProduct("hooked"))
        let commit = try repository.commit("a product")
        let hook = try await httpRequest(.POST, server.url + "/v1/sources/git/sync")
        #expect(hook.status == 202)
        _ = try await waitForSource(server, "commit \(commit) applied") { $0["lastAppliedCommit"] as? String == commit }
        #expect(try await server.fetchProduct("hooked") != nil)
        #expect(try await httpRequest(.POST, server.url + "/v1/sources/nope/sync").status == 404)
    }
}
