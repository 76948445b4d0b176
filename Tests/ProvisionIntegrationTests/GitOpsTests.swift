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

private func gitProduct(_ name: String, threshold: Int = 1000, metadata: String = "") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: risk\(metadata)}
    spec:
      from: orders
      where: amount > \(threshold)
      select: {order_id: order_id, amount: amount}
      sink: {file: {path: git/\(name).jsonl}}
      deletionPolicy: Delete
    """
}

/// `git daemon` serving `directory`'s repositories on 127.0.0.1 (`git://127.0.0.1:PORT/NAME`).
private final class GitDaemon {
    let port = freePort()
    private let process = Process()

    init(serving directory: String) throws {
        // The daemon itself, not `git daemon`: the `git` wrapper outlives a SIGTERM.
        let execPath = Process()
        execPath.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        execPath.arguments = ["--exec-path"]
        let output = Pipe()
        execPath.standardOutput = output
        try execPath.run()
        let directoryOfCommands = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try waitForExit(execPath, timeout: .seconds(10), what: "git --exec-path")
        process.executableURL = URL(fileURLWithPath: directoryOfCommands + "/git-daemon")
        process.arguments = ["--reuseaddr", "--export-all", "--listen=127.0.0.1", "--port=\(port)",
                             "--base-path=\(directory)", directory]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func url(_ name: String) -> String { "git://127.0.0.1:\(port)/\(name)" }

    /// Waits until the daemon answers for `name`.
    func waitUntilServing(_ name: String) throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let probe = Process()
            probe.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            probe.arguments = ["ls-remote", url(name)]
            probe.standardOutput = FileHandle.nullDevice
            probe.standardError = FileHandle.nullDevice
            try probe.run()
            try waitForExit(probe, timeout: .seconds(10), what: "git ls-remote")
            if probe.terminationStatus == 0 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw Failure("git daemon on port \(port) does not serve \(name)")
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// `git_http_server.py`: git's smart HTTP protocol (`git http-backend`) behind basic authentication.
private final class GitHTTPServer {
    let port = freePort()
    private let process = Process()
    private let statsPath = NSTemporaryDirectory() + "provision-git-http-\(UUID().uuidString)"

    init(serving directory: String, username: String, password: String) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("git_http_server.py").path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, String(port), directory, username, password, statsPath]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitForPort(port, of: process, what: "git_http_server.py")
    }

    func url(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }

    /// How many requests it answered 401.
    var refusedRequests: Int {
        Int((try? String(contentsOfFile: statsPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        removeTestData(statsPath)
    }
}

/// The server following a repository over `file://`, with the safety rules: a bad commit
/// applies nothing, a large prune waits for an approval, what the source did not create is
/// never touched, an unreachable repository leaves the products running.
@Suite(.serialized, .timeLimit(.minutes(6))) struct GitOpsTests {
    private func source(_ server: ServerProcess, _ name: String = "git") async throws -> [String: Any] {
        try await httpRequest(.GET, server.url + "/v1/sources/\(name)").json as? [String: Any] ?? [:]
    }

    private func waitForSource(_ server: ServerProcess, _ what: String, name: String = "git",
                               until condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + .seconds(60)
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            last = try await source(server, name)
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

    private func filter(_ server: ServerProcess, _ name: String) async throws -> String? {
        ((try await server.fetchProduct(name))?["spec"] as? [String: Any])?["where"] as? String
    }

    private func waitForFilter(_ server: ServerProcess, _ name: String, _ expected: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while try await filter(server, name) != expected {
            guard ContinuousClock.now < deadline else { throw Failure("\(name) never got where: \(expected); it has \(try await filter(server, name) ?? "nothing")") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// A `GitSource` applied like any spec, for a team, over `git daemon`: its products are
    /// the team's; a name another writer holds is a conflict on the source's status while the
    /// rest applies; a change through the API is answered with a warning naming the source and
    /// reverted at the next sync (with `detect`, reported and left); `provision/prune:
    /// disabled` keeps a product git dropped; a suspension survives a restart; deleting the
    /// source leaves its products running.
    @Test func aSourceAppliedAsASpecFollowsGitDaemonForItsTeam() async throws {
        let repository = try TestRepository()
        try repository.write("specs/a.yaml", gitProduct("team-a"))
        try repository.write("specs/b.yaml", gitProduct("team-b", metadata: ", annotations: {provision/prune: disabled}"))
        try repository.write("specs/taken.yaml", gitProduct("taken"))
        _ = try repository.commit("three products")
        let daemon = try GitDaemon(serving: (repository.path as NSString).deletingLastPathComponent)
        let repositoryName = (repository.path as NSString).lastPathComponent
        try daemon.waitUntilServing(repositoryName)

        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let editor = try server.createToken("risk-editor", team: "risk")
        let otherTeam = try server.createToken("payments-reader", team: "payments", role: "reader")
        let taken = gitProduct("taken").replacingOccurrences(of: "git/taken", with: "manual/taken")
        let sourceSpec = { (drift: String) in
            """
            apiVersion: provision/v1
            kind: GitSource
            metadata: {name: risk-specs, team: risk}
            spec:
              url: \(daemon.url(repositoryName))
              ref: main
              path: specs
              interval: 1s
              driftPolicy: \(drift)
            """
        }
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, taken, sourceSpec("revert"), to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        #expect(applied.output.contains("gitsource/risk-specs create"), "\(applied.output)")

        // The team's products, managed by the source; the name held by hand is a conflict, not taken over.
        for name in ["team-a", "team-b"] {
            let product = try await server.waitForProduct(name, timeout: .seconds(60)) { $0.phase == "Live" }
            let metadata = product["metadata"] as? [String: Any]
            #expect(metadata?["managedBy"] as? String == "gitops:risk-specs" && metadata?["team"] as? String == "risk")
        }
        let synced = try await waitForSource(server, "the first sync", name: "risk-specs") { reason($0) == "Synced" }
        let conflicts = synced["conflicts"] as? [[String: Any]] ?? []
        #expect(conflicts.count == 1 && conflicts.first?["file"] as? String == "specs/taken.yaml", "\(conflicts)")
        #expect(((try await server.fetchProduct("taken"))?["metadata"] as? [String: Any])?["managedBy"] as? String == "cli")
        #expect(synced["team"] as? String == "risk")
        let seenByOthers = try await httpRequest(.GET, server.url + "/v1/sources", token: otherTeam).json as? [Any]
        #expect(seenByOthers?.isEmpty == true, "another team sees the source")
        #expect(try await httpRequest(.GET, server.url + "/v1/sources/risk-specs", token: otherTeam).status == 404)

        // A change through the API: accepted, with a warning naming the source, then reverted.
        let change: [String: Any] = ["files": [["name": "edit.yaml", "content": gitProduct("team-a", threshold: 5000)]], "dryRun": false]
        let edited = try await httpRequest(.POST, server.url + "/v1/apply", body: try JSONSerialization.data(withJSONObject: change), token: editor)
        #expect(edited.status == 200, "\(String(decoding: edited.body, as: UTF8.self))")
        let warnings = (edited.json as? [String: Any])?["warnings"] as? [String] ?? []
        #expect(warnings.count == 1 && warnings[0].contains("git source 'risk-specs'"), "\(warnings)")
        #expect(edited.headers.first(name: "Warning")?.contains("risk-specs") == true)
        try await waitForFilter(server, "team-a", "amount > 1000")
        let reverted = try await waitForSource(server, "the drift reported", name: "risk-specs") { ($0["drift"] as? [[String: Any]])?.isEmpty == false }
        let drift = (reverted["drift"] as? [[String: Any]])?.first
        #expect(drift?["name"] as? String == "team-a" && drift?["changedBy"] as? String == "api:risk" && drift?["reverted"] as? Bool == true)
        #expect((drift?["fields"] as? [[String: Any]])?.first?["path"] as? String == "spec.where")
        // Deleting a product the source manages is removing it from git.
        let deleted = try await httpRequest(.DELETE, server.url + "/v1/products/team-a", token: editor)
        #expect(deleted.status == 409 && String(decoding: deleted.body, as: UTF8.self).contains("remove it from the repository"))

        // Removed from git, the annotated product stays.
        try repository.remove("specs/b.yaml")
        let dropped = try repository.commit("b leaves git")
        let kept = try await waitForSource(server, "commit \(dropped) applied", name: "risk-specs") { $0["lastAppliedCommit"] as? String == dropped }
        #expect(kept["keptFromPrune"] as? [String] == ["team-b"])
        #expect(try await server.fetchProduct("team-b") != nil)

        // Suspended: a commit is not applied, across a restart; resumed: it is.
        #expect(try server.ctl(["gitops", "suspend", "risk-specs"]).status == 0)
        _ = try await waitForSource(server, "suspended", name: "risk-specs") { reason($0) == "Suspended" && $0["suspended"] as? Bool == true }
        try repository.write("specs/a.yaml", gitProduct("team-a", threshold: 2000))
        let waiting = try repository.commit("a: 2000")
        try await Task.sleep(for: .seconds(2.5))
        #expect(try await filter(server, "team-a") == "amount > 1000", "a suspended source applied a commit")
        #expect(server.stop() == 0)
        try await server.start()
        _ = try await waitForSource(server, "still suspended after a restart", name: "risk-specs") { reason($0) == "Suspended" }
        #expect(try server.ctl(["get", "sources"]).output.contains("Suspended"))
        #expect(try await filter(server, "team-a") == "amount > 1000")
        #expect(try server.ctl(["gitops", "resume", "risk-specs"]).status == 0)
        _ = try await waitForSource(server, "commit \(waiting) applied", name: "risk-specs") { $0["lastAppliedCommit"] as? String == waiting }
        try await waitForFilter(server, "team-a", "amount > 2000")

        // driftPolicy: detect: the change stays and is reported.
        #expect(try server.ctl(["apply", "-f", try writeSpecs(sourceSpec("detect"), to: server.dataDirectory + "-detect")]).status == 0)
        _ = try await waitForSource(server, "detecting", name: "risk-specs") { $0["driftPolicy"] as? String == "detect" && reason($0) == "Synced" }
        let detectChange: [String: Any] = ["files": [["name": "edit.yaml", "content": gitProduct("team-a", threshold: 7000)]], "dryRun": false]
        #expect(try await httpRequest(.POST, server.url + "/v1/apply", body: try JSONSerialization.data(withJSONObject: detectChange), token: editor).status == 200)
        let detected = try await waitForSource(server, "the drift detected", name: "risk-specs") {
            ($0["drift"] as? [[String: Any]])?.first?["reverted"] as? Bool == false
        }
        #expect(((detected["conditions"] as? [[String: Any]])?.first?["message"] as? String)?.contains("differ from git") == true)
        try await Task.sleep(for: .seconds(2))
        #expect(try await filter(server, "team-a") == "amount > 7000", "detect reverted a change")

        // Deleted, the source stops; its products keep running.
        #expect(try server.ctl(["gitops", "delete", "risk-specs"]).status == 0)
        #expect(try await httpRequest(.GET, server.url + "/v1/sources/risk-specs").status == 404)
        #expect(try await server.fetchProduct("team-a") != nil)
        #expect(try await server.fetchProduct("team-b") != nil)
        // Its clone goes with it.
        let mirror = server.dataDirectory + "/gitops/risk-specs.git"
        let gone = ContinuousClock.now + .seconds(30)
        while FileManager.default.fileExists(atPath: mirror), ContinuousClock.now < gone { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!FileManager.default.fileExists(atPath: mirror))
    }

    /// Credentials named as the team's secrets reach an HTTP repository that demands them,
    /// through git's configuration in the environment: a missing secret refuses the apply
    /// with its field located; a wrong one stalls the source (its products keep running) until
    /// it is set right; neither value shows in any answer or log line.
    @Test func credentialsFromTheTeamsSecretsReachAnHTTPRepository() async throws {
        let repository = try TestRepository()
        try repository.write("specs/a.yaml", gitProduct("fetched-a"))
        let first = try repository.commit("one product")
        let username = "reader-\(UUID().uuidString.prefix(8))"
        let password = "git-\(UUID().uuidString)"
        TestSecrets.register(password)
        let http = try GitHTTPServer(serving: (repository.path as NSString).deletingLastPathComponent, username: username, password: password)
        let name = (repository.path as NSString).lastPathComponent

        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, to: server.dataDirectory + "-catalog")]).status == 0)
        let source = """
            apiVersion: provision/v1
            kind: GitSource
            metadata: {name: fetched, team: risk}
            spec:
              url: \(http.url(name))
              path: specs
              interval: 1s
              credentials:
                username: ${secret:git-user}
                password: ${secret:git-token}
            """
        let specs = try writeSpecs(source, to: server.dataDirectory + "-source")
        let refused = try server.ctl(["apply", "-f", specs])
        #expect(refused.status != 0 && refused.errorOutput.contains("team 'risk' has no secret 'git-token'")
                && refused.errorOutput.contains("specs.yaml:10:15: spec.credentials.password"), "\(refused.errorOutput)")
        for (secret, value) in [("git-user", username), ("git-token", password)] {
            #expect(try server.ctl(["secret", "set", secret, "--team", "risk"], input: Data((value + "\n").utf8)).status == 0)
        }
        #expect(try server.ctl(["apply", "-f", specs]).status == 0)
        _ = try await server.waitForProduct("fetched-a", timeout: .seconds(60)) { $0.phase == "Live" }
        _ = try await waitForSource(server, "commit \(first) applied", name: "fetched") { $0["lastAppliedCommit"] as? String == first }
        #expect(http.refusedRequests == 0, "git asked without credentials")

        // A wrong password: the server refuses, the source stalls, the product runs on.
        #expect(try server.ctl(["secret", "set", "git-token", "--team", "risk"], input: Data("wrong\n".utf8)).status == 0)
        let stalled = try await waitForSource(server, "a refused fetch", name: "fetched") { reason($0) == "FetchFailed" }
        #expect(http.refusedRequests > 0)
        #expect(((stalled["conditions"] as? [[String: Any]])?.first?["message"] as? String)?.contains("products keep running") == true)
        #expect(try await server.fetchProduct("fetched-a")?["status"].flatMap { ($0 as? [String: Any])?["phase"] as? String } == "Live")
        #expect(try server.ctl(["secret", "set", "git-token", "--team", "risk"], input: Data((password + "\n").utf8)).status == 0)
        try repository.write("specs/b.yaml", gitProduct("fetched-b"))
        let second = try repository.commit("a second product")
        _ = try await waitForSource(server, "commit \(second) applied", name: "fetched") { $0["lastAppliedCommit"] as? String == second }
        #expect(try await server.fetchProduct("fetched-b") != nil)
        #expect(TestSecrets.found(in: server.serverLog).isEmpty, "the server log holds the git password")
    }
}
