import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Testing

private func hookProduct(_ name: String, team: String, url: String = "${secret:hook-url}", extra: String = "") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: \(team)}
    spec:
      from: orders
      backfill: all
      select: {order_id: order_id, amount: amount}
      sink:
        webhook:
          url: "\(url)"
          batch: {maxRecords: 100, linger: 10ms}
          retry: {maxAttempts: 3, initialBackoff: 100ms, maxBackoff: 500ms}
    \(extra)
    """
}

private func applyDocuments(_ server: ServerProcess, _ documents: [String], token: String) async throws -> HTTPReply {
    let body: [String: Any] = ["files": [["name": "hooks.yaml", "content": documents.joined(separator: "\n---\n")]], "dryRun": false]
    return try await httpRequest(.POST, server.url + "/v1/apply", body: try JSONSerialization.data(withJSONObject: body), token: token)
}

private func firstErrorDetail(_ reply: HTTPReply) -> [String: Any]? {
    (((reply.json as? [String: Any])?["error"] as? [String: Any])?["details"] as? [[String: Any]])?.first
}

private func stalledReason(_ product: [String: Any]) -> String? {
    ((product["status"] as? [String: Any])?["conditions"] as? [[String: Any]])?
        .first { $0["type"] as? String == "Stalled" && $0["status"] as? String == "True" }?["reason"] as? String
}

private func produceOrders(_ server: ServerProcess, count: Int, from start: Int) throws {
    let orders = TestOrder.generate(count: count, startIndex: start, end: Date(), days: 1, seed: UInt64(start + 7))
    let path = server.dataDirectory + "-orders-\(start).jsonl"
    try orders.map(\.jsonLine).joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
    let produced = try server.ctl(["produce", "orders", "--file", path])
    #expect(produced.status == 0, "\(produced.errorOutput)")
}

/// Team secrets (`${secret:NAME}`) and where sinks may connect, against a running server.
@Suite(.serialized, .timeLimit(.minutes(6))) struct SecretsTests {
    /// A team's editor stores secrets; its product's webhook reads its URL, signing key and an
    /// API key header from them. No other team can name them, a reader cannot set them, a
    /// rotated one takes effect at once and after a restart, and no value is ever in a
    /// response, the server's log or the store's file.
    @Test func aTeamsSecretsReachOnlyItsSinksAndNeverLeaveTheServer() async throws {
        let signingKey = "sk-\(UUID().uuidString)"
        let firstApiKey = "ak1-\(UUID().uuidString)"
        let secondApiKey = "ak2-\(UUID().uuidString)"
        for secret in [signingKey, firstApiKey, secondApiKey] { TestSecrets.register(secret) }
        let receiver = try WebhookReceiver(["--secret", signingKey, "--header", "X-Api-Key"])
        defer { receiver.stop() }
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let editor = try server.createToken("fraud-editor", team: "fraud", role: "editor")
        let reader = try server.createToken("fraud-reader", team: "fraud", role: "reader")
        let growth = try server.createToken("growth-editor", team: "growth", role: "editor")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, to: server.dataDirectory + "-catalog")]).status == 0)
        try produceOrders(server, count: 300, from: 0)

        // Set by the team's editor: from standard input, an environment variable, a file.
        let asEditor: [String: String?] = ["PROVISION_TOKEN": editor, "FRAUD_API_KEY": firstApiKey]
        let signing = try provisionctl(["secret", "set", "hook-key", "--server", server.url], input: Data((signingKey + "\n").utf8),
                                       environment: asEditor)
        #expect(signing.status == 0, "\(signing.errorOutput)")
        #expect(signing.output.contains("secret/hook-key set for team fraud"))
        #expect(try provisionctl(["secret", "set", "api-key", "--from-env", "FRAUD_API_KEY", "--server", server.url],
                                 environment: asEditor).status == 0)
        let urlFile = server.dataDirectory + "-hook-url"
        try receiver.url.write(toFile: urlFile, atomically: true, encoding: .utf8)
        #expect(try provisionctl(["secret", "set", "hook-url", "--from-file", urlFile, "--server", server.url],
                                 environment: asEditor).status == 0)
        // A reader may not; nor may an editor set another team's.
        let byReader = try provisionctl(["secret", "set", "hook-key", "--server", server.url], input: Data("x".utf8),
                                        environment: ["PROVISION_TOKEN": reader])
        #expect(byReader.status != 0 && byReader.errorOutput.contains("[Forbidden]"), "\(byReader.errorOutput)")
        let crossTeam = try await httpRequest(.PUT, server.url + "/v1/secrets/hook-key",
                                              body: Data(#"{"value": "x", "team": "fraud"}"#.utf8), token: growth)
        #expect(crossTeam.status == 403)

        let product = hookProduct("fraud-hook", team: "fraud", extra: """
                  secret: "${secret:hook-key}"
                  signing: provision
                  headers: {X-Api-Key: "${secret:api-key}"}
            """)
        let applied = try await applyDocuments(server, [product], token: editor)
        #expect(applied.status == 200, "\(String(decoding: applied.body, as: UTF8.self))")
        _ = try await server.waitForProduct("fraud-hook", timeout: .seconds(60)) { $0.phase == "Live" && receiver.delivered.count == 300 }
        #expect(receiver.requests.allSatisfy { $0.verified == true && $0.header == firstApiKey })

        // Another team's spec naming the same secret is refused, located, and nothing applied:
        // names resolve in the applying team's secrets, which hold no such secret.
        let borrowed = try await applyDocuments(server, [hookProduct("growth-hook", team: "growth")], token: growth)
        #expect(borrowed.status == 422, "\(String(decoding: borrowed.body, as: UTF8.self))")
        let detail = firstErrorDetail(borrowed)
        #expect(detail?["path"] as? String == "spec.sink.webhook.url")
        #expect(detail?["line"] as? Int == 10 && detail?["column"] as? Int == 12, "\(String(describing: detail))")
        #expect((detail?["message"] as? String)?.contains("team 'growth' has no secret 'hook-url'") == true)
        #expect(try await server.fetchProduct("growth-hook") == nil)
        let unknown = try await applyDocuments(server, [hookProduct("fraud-other", team: "fraud", url: "${secret:nope}")], token: editor)
        #expect(unknown.status == 422 && (firstErrorDetail(unknown)?["message"] as? String)?.contains("no secret 'nope'") == true)

        // Listed by name to the team, never by value; another team sees none of them.
        let listed = try await httpRequest(.GET, server.url + "/v1/secrets", token: reader)
        let names = (listed.json as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == ["api-key", "hook-key", "hook-url"])
        let others = try await httpRequest(.GET, server.url + "/v1/secrets", token: growth)
        #expect((others.json as? [Any])?.isEmpty == true)

        // Rotated: the product picks the new value up now, without a change to its spec.
        #expect(try provisionctl(["secret", "set", "api-key", "--server", server.url], input: Data(secondApiKey.utf8),
                                 environment: ["PROVISION_TOKEN": editor]).status == 0)
        try produceOrders(server, count: 100, from: 300)
        _ = try await server.waitForProduct("fraud-hook", timeout: .seconds(60)) { _ in
            receiver.requests.contains { $0.header == secondApiKey && $0.records.contains { $0.offset >= 300 } }
        }
        #expect(receiver.requests.filter { $0.records.contains { $0.offset >= 300 } }.allSatisfy { $0.header == secondApiKey })

        // After a restart the sealed secrets open with the key kept in the data directory.
        let keyPath = server.dataDirectory + "/secret-key"
        let mode = (try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
        server.stop()
        try await server.start()
        try produceOrders(server, count: 100, from: 400)
        _ = try await server.waitForProduct("fraud-hook", timeout: .seconds(60)) { _ in
            receiver.requests.contains { $0.records.contains { $0.offset >= 400 } }
        }
        #expect(receiver.requests.allSatisfy { $0.verified == true })
        #expect(receiver.requests.filter { $0.records.contains { $0.offset >= 400 } }.allSatisfy { $0.header == secondApiKey })

        // A deleted secret stops its product, which says which secret is missing.
        #expect(try provisionctl(["secret", "delete", "hook-url", "--server", server.url], environment: ["PROVISION_TOKEN": editor]).status == 0)
        let stalled = try await server.waitForProduct("fraud-hook", timeout: .seconds(60)) { stalledReason($0) == "SinkUnavailable" }

        // No value anywhere: not in what the API answers, the CLI prints, the log, or the store.
        var answers: [String] = [String(decoding: try JSONSerialization.data(withJSONObject: stalled), as: UTF8.self)]
        for path in ["/v1/products", "/v1/products/fraud-hook", "/v1/datasets", "/v1/datasets/orders", "/v1/secrets",
                     "/v1/secrets?team=fraud", "/metrics", "/v1/tokens", "/openapi.json", "/healthz"] {
            answers.append(String(decoding: try await httpRequest(.GET, server.url + path).body, as: UTF8.self))
        }
        for arguments in [["get", "products", "-o", "yaml"], ["describe", "product", "fraud-hook"], ["secret", "list"],
                          ["catalog", "describe", "orders"]] {
            let result = try server.ctl(arguments)
            answers += [result.output, result.errorOutput]
        }
        answers.append(String(decoding: borrowed.body, as: UTF8.self))
        answers.append(server.serverLog)
        let stored = try #require(FileManager.default.contents(atPath: server.dataDirectory + "/control/objects.log"))
        answers.append(String(decoding: stored, as: UTF8.self))
        for value in [signingKey, firstApiKey, secondApiKey, receiver.url] {
            let place = answers.firstIndex { $0.contains(value) }
            #expect(place == nil, "a secret value is in answer \(place ?? -1)")
        }
    }

    /// `--allow-destination` limits where sinks connect, at apply time for a URL the spec
    /// names or a secret holds, and when a sink opens for one that changed since; the
    /// server's own API is never a destination.
    @Test func sinksConnectOnlyWhereTheOperatorAllows() async throws {
        let receiver = try WebhookReceiver([])
        defer { receiver.stop() }
        let server = ServerProcess()
        server.arguments = ["--allow-destination", "10.0.0.0/8,*.hooks.example"]
        try await server.start()
        defer { server.stop() }
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, to: server.dataDirectory + "-catalog")]).status == 0)
        try produceOrders(server, count: 50, from: 0)
        let editor = try server.createToken("fraud-editor", team: "fraud", role: "editor")

        let direct = try await applyDocuments(server, [hookProduct("direct", team: "fraud", url: receiver.url)], token: editor)
        #expect(direct.status == 403, "\(String(decoding: direct.body, as: UTF8.self))")
        #expect(firstErrorDetail(direct)?["path"] as? String == "spec.sink.webhook.url")
        #expect((firstErrorDetail(direct)?["message"] as? String)?.contains("not among the destinations this server allows") == true)

        // Allowed when applied; refused when the sink opens after the secret was re-pointed.
        func setURL(_ url: String) async throws {
            let set = try await httpRequest(.PUT, server.url + "/v1/secrets/hook-url",
                                            body: try JSONSerialization.data(withJSONObject: ["value": url]), token: editor)
            #expect(set.status == 200, "\(String(decoding: set.body, as: UTF8.self))")
        }
        try await setURL("http://10.255.255.1:9/hook")
        #expect(try await applyDocuments(server, [hookProduct("via-secret", team: "fraud")], token: editor).status == 200)
        try await setURL(receiver.url)
        let refused = try await server.waitForProduct("via-secret", timeout: .seconds(60)) { stalledReason($0) == "DestinationRefused" }
        #expect(receiver.requests.isEmpty)
        #expect(String(describing: refused).contains("not among the destinations"))
        let metrics = String(decoding: try await httpRequest(.GET, server.url + "/metrics").body, as: UTF8.self)
        #expect(metrics.contains(#"provision_sink_errors_total{product="via-secret",reason="DestinationRefused"}"#), "\(metrics.prefix(2000))")

        // Its own API, by any name, whatever the list says.
        let own = ServerProcess()
        try await own.start()
        defer { own.stop() }
        for url in ["\(own.url)/v1/topics/orders/records", "http://localhost:\(own.port)/v1/topics/orders/records"] {
            let loop = try await applyDocuments(own, [catalogSpec, hookProduct("loop", team: "fraud", url: url)], token: testAdminToken)
            #expect(loop.status == 403, "\(url): \(String(decoding: loop.body, as: UTF8.self))")
            #expect((firstErrorDetail(loop)?["message"] as? String)?.contains("this server's own API") == true)
        }
    }
}
