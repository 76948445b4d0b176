import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing

private func teamProduct(_ name: String, team: String?, threshold: Int = 1000) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name)\(team.map { ", team: \($0)" } ?? "")}
    spec:
      from: orders
      where: amount > \(threshold)
      sink: {file: {path: teams/\(name).jsonl}}
      deletionPolicy: Delete
    """
}

private func apply(_ server: ServerProcess, _ documents: [String], token: String?, prune: Bool = false) async throws -> HTTPReply {
    let body: [String: Any] = ["files": [["name": "team.yaml", "content": documents.joined(separator: "\n---\n")]],
                               "dryRun": false, "prune": prune]
    return try await httpRequest(.POST, server.url + "/v1/apply", body: try JSONSerialization.data(withJSONObject: body), token: token)
}

private func errorCode(_ reply: HTTPReply) -> String? {
    ((reply.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String
}

/// Tokens, teams and roles against a running server with authentication on (the default).
@Suite(.serialized, .timeLimit(.minutes(5))) struct AuthTests {
    @Test func withoutAValidTokenNothingButHealthAnswers() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let health = try await httpRequest(.GET, server.url + "/healthz", token: nil)
        #expect(health.status == 200)
        #expect((health.json as? [String: Any])?["auth"] as? String == "on")
        #expect(try await httpRequest(.GET, server.url + "/livez", token: nil).status == 200)
        let ready = try await httpRequest(.GET, server.url + "/readyz", token: nil)
        #expect(ready.status == 200 && (ready.json as? [String: Any])?["status"] as? String == "ready")
        for (method, path) in [(HTTPMethod.GET, "/v1/products"), (.GET, "/v1/datasets"), (.POST, "/v1/apply"), (.GET, "/v1/tokens"),
                               (.GET, "/v1/topics"), (.GET, "/v1/watch")] {
            let none = try await httpRequest(method, server.url + path, token: nil)
            #expect(none.status == 401, "\(method) \(path) without a token: \(none.status)")
            #expect(errorCode(none) == "Unauthorized")
            let wrong = try await httpRequest(method, server.url + path, token: "pvn_not-a-token")
            #expect(wrong.status == 401, "\(method) \(path) with an unknown token: \(wrong.status)")
        }
        // The CLI says so too, and works with the token.
        let refused = try provisionctl(["get", "products", "--server", server.url, "--token", "pvn_wrong"])
        #expect(refused.status != 0)
        #expect(refused.errorOutput.contains("[Unauthorized]"), "\(refused.errorOutput)")
        #expect(try server.ctl(["get", "products"]).status == 0)
    }

    /// A team sees the whole catalog and only its own products; another team's product is
    /// not found (its name does not leak through a 403), whatever is tried on it, and no
    /// apply of another team's — not a prune, not a re-apply naming its team — changes it.
    @Test func aTeamSeesAndChangesOnlyItsOwnProducts() async throws {
        let server = ServerProcess()
        let hookToken = "risk-hook-token-\(UUID().uuidString)"
        TestSecrets.register(hookToken)
        server.environment = ["PROVISION_TEAM_RISK_HOOK_TOKEN": hookToken]
        try await server.start()
        defer { server.stop() }
        let riskEditor = try server.createToken("risk-editor", team: "risk", role: "editor")
        let riskReader = try server.createToken("risk-reader", team: "risk", role: "reader")
        let paymentsEditor = try server.createToken("payments-editor", team: "payments", role: "editor")

        #expect(try await apply(server, [catalogSpec], token: riskEditor).status == 200)
        let created = try await apply(server, [teamProduct("risk-orders", team: nil)], token: riskEditor)
        #expect(created.status == 200, "\(String(decoding: created.body, as: UTF8.self))")
        let stored = try #require(try await server.fetchProduct("risk-orders"))
        let metadata = stored["metadata"] as? [String: Any]
        #expect(metadata?["team"] as? String == "risk")  // the caller's team, filled in
        #expect(metadata?["managedBy"] as? String == "api:risk")

        // The other team: every route on the product is 404, and the list leaves it out.
        for (method, path) in [(HTTPMethod.GET, "/v1/products/risk-orders"), (.DELETE, "/v1/products/risk-orders"),
                               (.POST, "/v1/products/risk-orders/pause"), (.POST, "/v1/products/risk-orders/resume"),
                               (.POST, "/v1/products/risk-orders/redeliver"), (.GET, "/v1/topics/_deadletter.risk-orders/records")] {
            let reply = try await httpRequest(method, server.url + path, token: paymentsEditor)
            #expect(reply.status == 404, "\(method) \(path) by another team: \(reply.status)")
        }
        let listed = try await httpRequest(.GET, server.url + "/v1/products", token: paymentsEditor).json as? [[String: Any]]
        #expect(listed?.isEmpty == true)
        let catalog = try await httpRequest(.GET, server.url + "/v1/datasets", token: paymentsEditor).json as? [[String: Any]]
        #expect(catalog?.count == 1)  // the catalog is everyone's
        // A prune with nothing deletes only its own (nothing); naming the other team is 403;
        // re-applying the name under its own team is another writer's object: 409.
        #expect(try await apply(server, [], token: paymentsEditor, prune: true).status == 200)
        let naming = try await apply(server, [teamProduct("risk-orders", team: "risk", threshold: 1)], token: paymentsEditor)
        #expect(naming.status == 403)
        #expect(errorCode(naming) == "Forbidden")
        let taking = try await apply(server, [teamProduct("risk-orders", team: nil, threshold: 1)], token: paymentsEditor)
        #expect(taking.status == 409)
        let unchanged = try await server.fetchProduct("risk-orders")
        #expect((unchanged?["spec"] as? [String: Any])?["where"] as? String == "amount > 1000")
        #expect((unchanged?["metadata"] as? [String: Any])?["deleting"] == nil)

        // The team's reader sees it and changes nothing: 403.
        #expect(try await httpRequest(.GET, server.url + "/v1/products/risk-orders", token: riskReader).status == 200)
        for (method, path) in [(HTTPMethod.DELETE, "/v1/products/risk-orders"), (.POST, "/v1/products/risk-orders/pause")] {
            let reply = try await httpRequest(method, server.url + path, token: riskReader)
            #expect(reply.status == 403, "\(method) \(path) by a reader: \(reply.status)")
            #expect(errorCode(reply) == "Forbidden")
        }
        #expect(try await apply(server, [teamProduct("risk-orders", team: nil, threshold: 5)], token: riskReader).status == 403)
        let produced = try await httpRequest(.POST, server.url + "/v1/topics/orders/records", body: Data("{\"order_id\":\"x\"}\n".utf8),
                                             contentType: "application/x-ndjson", token: riskReader)
        #expect(produced.status == 403)
        // Only admins manage tokens.
        #expect(try await httpRequest(.GET, server.url + "/v1/tokens", token: riskEditor).status == 403)
        // A team's spec reads only its own secrets: the server's database URL is refused,
        // located, and nothing is applied; a variable under the team's prefix is accepted.
        let leaking = teamProduct("leaky", team: nil).replacingOccurrences(
            of: "  sink: {file: {path: teams/leaky.jsonl}}",
            with: "  sink: {webhook: {url: \"http://127.0.0.1:9/hook\", headers: {X-Pg: \"${env:PROVISION_TEST_POSTGRES_URL}\"}}}")
        let refused = try await apply(server, [leaking], token: riskEditor)
        #expect(refused.status == 403, "\(String(decoding: refused.body, as: UTF8.self))")
        let detail = (((refused.json as? [String: Any])?["error"] as? [String: Any])?["details"] as? [[String: Any]])?.first
        #expect(detail?["path"] as? String == "spec.sink.webhook.headers.X-Pg")
        #expect((detail?["message"] as? String)?.contains("PROVISION_TEAM_RISK_*") == true)
        #expect(try await server.fetchProduct("leaky") == nil)
        let own = leaking.replacingOccurrences(of: "PROVISION_TEST_POSTGRES_URL", with: "PROVISION_TEAM_RISK_HOOK_TOKEN")
        #expect(try await apply(server, [own], token: riskEditor).status == 200)

        // The team's editor deletes it.
        #expect(try await httpRequest(.DELETE, server.url + "/v1/products/risk-orders", token: riskEditor).status == 202)
    }

    /// Tokens are listed without their secrets, with when they were last used; a revoked
    /// token is refused on its next request, an expired one as soon as it expires.
    @Test func revokedAndExpiredTokensAreRefusedAndSecretsAreNeverListed() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let editor = try server.createToken("short-lived", team: "risk", role: "editor")
        let expiring = try server.createToken("expiring", team: "risk", role: "reader", expires: "2s")
        #expect(try await httpRequest(.GET, server.url + "/v1/products", token: editor).status == 200)
        let listed = try server.ctl(["token", "list"])
        #expect(listed.status == 0)
        #expect(listed.output.contains("short-lived") && listed.output.contains("expiring") && listed.output.contains("admin"))
        let json = try await httpRequest(.GET, server.url + "/v1/tokens")
        let text = String(decoding: json.body, as: UTF8.self) + listed.output
        for secret in [editor, expiring, testAdminToken] { #expect(!text.contains(secret), "a secret was listed") }
        let entry = (json.json as? [[String: Any]])?.first { $0["name"] as? String == "short-lived" }
        #expect(entry?["lastUsedAt"] is String)
        #expect(entry?["secretHash"] == nil)

        #expect(try server.ctl(["token", "revoke", "short-lived"]).status == 0)
        #expect(try await httpRequest(.GET, server.url + "/v1/products", token: editor).status == 401)
        // The expiry is two seconds after creation: waited for, bounded.
        let deadline = ContinuousClock.now + .seconds(30)
        var status = 200
        while ContinuousClock.now < deadline {
            status = try await httpRequest(.GET, server.url + "/v1/products", token: expiring).status
            if status == 401 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(status == 401)
        // Nothing the server logged holds a secret.
        for secret in [editor, expiring, testAdminToken] { #expect(!server.serverLog.contains(secret)) }
    }

    /// Without `PROVISION_ADMIN_TOKEN`, the first start writes an admin token to a file only
    /// its owner reads and says where; the token works, and a restart keeps it.
    @Test func theFirstAdminTokenIsWrittenToAPrivateFile() async throws {
        let server = ServerProcess()
        server.environment["PROVISION_ADMIN_TOKEN"] = ""
        try await server.start()
        defer { server.stop() }
        let path = server.dataDirectory + "/admin-token"
        #expect(server.logSinceStart.contains("the first admin token is in \(path)"))
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let secret = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await httpRequest(.GET, server.url + "/v1/tokens", token: secret).status == 200)
        #expect(try await httpRequest(.GET, server.url + "/v1/tokens").status == 401)  // the suite's token is not this server's
        try await server.restart()
        #expect(!server.logSinceStart.contains("the first admin token"))
        #expect(try await httpRequest(.GET, server.url + "/v1/tokens", token: secret).status == 200)
    }

    /// The CLI finds the server and its token in a config file of named servers, the way
    /// kubectl finds a context: the file's current one, or `--context`.
    @Test func theCLIReadsNamedServersFromItsConfigFile() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let directory = server.dataDirectory + "-config"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try testAdminToken.write(toFile: directory + "/token", atomically: true, encoding: .utf8)
        try """
            current: test
            servers:
              test: {url: "\(server.url)", tokenFile: "\(directory)/token"}
              stale: {url: "\(server.url)", token: "pvn_revoked-long-ago"}
            """.write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)
        let environment: [String: String?] = ["PROVISION_CONFIG": directory + "/config.yaml", "PROVISION_TOKEN": nil,
                                              "PROVISION_SERVER": nil, "PROVISION_CONTEXT": nil]
        let current = try provisionctl(["get", "products"], environment: environment)
        #expect(current.status == 0, "\(current.errorOutput)")
        let stale = try provisionctl(["get", "products", "--context", "stale"], environment: environment)
        #expect(stale.status != 0 && stale.errorOutput.contains("[Unauthorized]"), "\(stale.errorOutput)")
        let missing = try provisionctl(["get", "products", "--context", "prod"], environment: environment)
        #expect(missing.status != 0 && missing.errorOutput.contains("has no server 'prod' (it has: stale, test)"), "\(missing.errorOutput)")
        // A flag still wins over the file.
        let flagged = try provisionctl(["get", "products", "--token", "pvn_wrong"], environment: environment)
        #expect(flagged.status != 0 && flagged.errorOutput.contains("[Unauthorized]"))
        // Nothing listening: said at once (an HTTP client's default is to retry connecting
        // until the request's timeout, two minutes), not after the time limit given here.
        let nobody = try provisionctl(["get", "products", "--server", "http://127.0.0.1:\(freePort())"], environment: environment,
                                      timeout: .seconds(30))
        #expect(nobody.status != 0 && nobody.errorOutput.contains("cannot reach the Provision server"), "\(nobody.errorOutput)")
    }

    /// The catalog is searched by name, owner, description and field name, lists come in
    /// pages, and a dataset's lineage names the caller's products that read it (through
    /// `from` or a join) and where they write, and only counts other teams'.
    @Test func theCatalogIsSearchedPagedAndShowsLineage() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let risk = try server.createToken("risk", team: "risk", role: "editor")
        let payments = try server.createToken("payments", team: "payments", role: "editor")
        let customers = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: customers, owner: crm, description: "Everyone who ever bought something"}
            spec:
              key: customer_id
              schema: {customer_id: string, email: string, segment: string}
            """
        #expect(try await apply(server, [catalogSpec, customers], token: testAdminToken).status == 200)
        func names(_ query: String) async throws -> [String] {
            let reply = try await httpRequest(.GET, server.url + "/v1/datasets?q=" + query, token: risk)
            return (reply.json as? [[String: Any]] ?? []).compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
        }
        #expect(try await names("email") == ["customers"])        // a field name
        #expect(try await names("sales") == ["orders"])           // the owner
        #expect(try await names("BOUGHT") == ["customers"])       // the description, any case
        #expect(try await names("crm%20segment") == ["customers"])  // every word
        #expect(try await names("nothing-like-it").isEmpty)
        let search = try server.ctl(["catalog", "email"])
        #expect(search.status == 0 && search.output.contains("customers") && !search.output.contains("orders"), "\(search.output)")

        #expect(try await apply(server, [teamProduct("risk-a", team: nil), teamProduct("risk-b", team: nil)], token: risk).status == 200)
        #expect(try await apply(server, [teamProduct("pay-a", team: nil)], token: payments).status == 200)
        // Pages of one: every product once, in order, then no further token.
        var seen: [String] = []
        var token: String?
        repeat {
            var request = HTTPClientRequest(url: server.url + "/v1/products?limit=1" + (token.map { "&continue=\($0)" } ?? ""))
            request.headers.add(name: "Authorization", value: "Bearer \(testAdminToken)")
            let response = try await testHTTPClient.execute(request, deadline: .now() + .seconds(30))
            let body = try await response.body.collect(upTo: 1 << 20)
            let page = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [[String: Any]] ?? []
            #expect(page.count == 1)
            seen += page.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
            token = response.headers.first(name: "Provision-Continue")
        } while token != nil && seen.count < 10
        #expect(seen == ["pay-a", "risk-a", "risk-b"])

        let lineage = try await httpRequest(.GET, server.url + "/v1/datasets/orders", token: risk).json as? [String: Any]
        let readers = (lineage?["lineage"] as? [String: Any])?["products"] as? [[String: Any]] ?? []
        #expect(readers.compactMap { $0["product"] as? String } == ["risk-a", "risk-b"])
        #expect((lineage?["lineage"] as? [String: Any])?["otherTeams"] as? Int == 1)
        let described = try provisionctl(["catalog", "describe", "orders", "--server", server.url, "--token", risk])
        #expect(described.status == 0, "\(described.errorOutput)")
        #expect(described.output.contains("risk-a (team risk, from)") && described.output.contains("and 1 product of other teams"),
                "\(described.output)")
        #expect(!described.output.contains("pay-a"))
    }

    /// `--dev` turns authentication off and says so, in the log and in `/healthz`.
    @Test func devModeNeedsNoTokenAndSaysSo() async throws {
        let server = ServerProcess()
        server.arguments = ["--dev"]
        try await server.start()
        defer { server.stop() }
        #expect(try await httpRequest(.GET, server.url + "/v1/products", token: nil).status == 200)
        #expect((try await httpRequest(.GET, server.url + "/healthz", token: nil).json as? [String: Any])?["auth"] as? String == "off")
        #expect(server.logSinceStart.contains("AUTHENTICATION IS OFF"))
    }
}
