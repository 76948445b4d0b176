import ProvisionModel
import Testing
@testable import ProvisionSinks

@Suite struct ElasticsearchBulkTests {
    private func operation(_ id: String, bytes: Int, delete: Bool = false) -> BulkOperation {
        BulkOperation(action: delete ? .delete : .index, id: id, partition: 0, offset: 7,
                      source: delete ? [] : Array(repeating: UInt8(ascii: "x"), count: bytes))
    }

    @Test func itemsAreClassifiedAsTheBulkAPIDocumentsThem() {
        #expect(BulkItemOutcome.classify(action: "index", status: 201, errorType: nil, errorReason: nil) == .done)
        #expect(BulkItemOutcome.classify(action: "delete", status: 404, errorType: nil, errorReason: nil) == .done)
        #expect(BulkItemOutcome.classify(action: "index", status: 429, errorType: "es_rejected_execution_exception", errorReason: nil)
            == .retry("status 429 (es_rejected_execution_exception)"))
        #expect(BulkItemOutcome.classify(action: "index", status: 503, errorType: nil, errorReason: nil) == .retry("status 503"))
        #expect(BulkItemOutcome.classify(action: "index", status: 400, errorType: "mapper_parsing_exception",
                                         errorReason: "failed to parse field [amount]")
            == .rejected("Elasticsearch refused the document: status 400, mapper_parsing_exception: failed to parse field [amount]"))
        #expect(BulkItemOutcome.classify(action: "index", status: 404, errorType: "index_not_found_exception", errorReason: nil)
            == .rejected("Elasticsearch refused the document: status 404, index_not_found_exception"))
    }

    @Test func aResponseIsReadItemByItem() throws {
        let response = try JSONParser.parse(#"""
            {"errors":true,"items":[{"index":{"status":201}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}},
             {"delete":{"status":404}},{"index":{"status":429,"error":{"type":"es_rejected_execution_exception"}}}]}
            """#)
        #expect(BulkBody.outcomes(response, count: 4) == [
            .done, .rejected("Elasticsearch refused the document: status 400, mapper_parsing_exception: bad"), .done,
            .retry("status 429 (es_rejected_execution_exception)"),
        ])
        // An answer for a different number of items is not trusted.
        #expect(BulkBody.outcomes(response, count: 3) == nil)
        #expect(BulkBody.outcomes(try JSONParser.parse(#"{"errors":false}"#), count: 2) == [.done, .done])
    }

    @Test func requestsAreBoundedByCountAndBytes() {
        let operations = (0..<10).map { operation("k\($0)", bytes: 100) }
        #expect(BulkBody.split(operations, maxOperations: 4, maxBytes: 1 << 20) == [0..<4, 4..<8, 8..<10])
        // Each operation counts its source plus about 100 bytes of action line.
        #expect(BulkBody.split(operations, maxOperations: 100, maxBytes: 450) == [0..<2, 2..<4, 4..<6, 6..<8, 8..<10])
        // Four in flight: 10 operations in 4 requests rather than 4, 4 and 2.
        #expect(BulkBody.split(operations, maxOperations: 4, maxBytes: 1 << 20, parallel: 4) == [0..<3, 3..<6, 6..<9, 9..<10])
        #expect(BulkBody.split(Array(repeating: operation("k", bytes: 1), count: 65_536), maxOperations: 5_000, maxBytes: 1 << 30,
                               parallel: 4).map(\.count) == Array(repeating: 4_096, count: 16))
        // A document larger than the limit still goes, alone.
        #expect(BulkBody.split([operation("big", bytes: 5000), operation("small", bytes: 1)], maxOperations: 100, maxBytes: 1000)
            == [0..<1, 1..<2])
    }

    @Test func theBodyIsNewlineDelimited() {
        let body = BulkBody.encode([operation("a", bytes: 2), operation("b\"", bytes: 0, delete: true)][...], index: "orders-3")
        #expect(String(decoding: body, as: UTF8.self) == """
            {"index":{"_index":"orders-3","_id":"a"}}
            xx
            {"delete":{"_index":"orders-3","_id":"b\\""}}

            """)
    }

    @Test func mappingsFollowTheOutputSchema() {
        let schema = Schema(fields: [.init(name: "id", type: .string), .init(name: "note", type: .string),
                                     .init(name: "amount", type: .decimal), .init(name: "at", type: .timestamp)])
        let body = ElasticsearchMapping.createIndexBody(schema: schema, fullText: ["note"], strict: true, product: "p", build: 2)
        #expect(body["mappings"]?["properties"]?["id"]?["type"] == .string("keyword"))
        #expect(body["mappings"]?["properties"]?["note"]?["type"] == .string("text"))
        #expect(body["mappings"]?["properties"]?["amount"]?["type"] == .string("double"))
        #expect(body["mappings"]?["properties"]?["at"]?["type"] == .string("date"))
        #expect(body["mappings"]?["dynamic"] == .string("strict"))
        #expect(body["mappings"]?["_meta"]?["build"] == .integer(2))
    }
}
