import Foundation
import ProvisionModel
import ProvisionPipeline
import Testing
@testable import ProvisionSinks

@Suite struct WebhookDeliveryTests {
    private let start = ContinuousClock.now
    private func delivery(maxAttempts: Int = 4) -> WebhookDelivery {
        WebhookDelivery(maxAttempts: maxAttempts, backoff: RetryBackoff(initial: .milliseconds(200), cap: .seconds(30)),
                        unavailableAfter: .seconds(60))
    }

    @Test func twoHundredsAreDeliveredAtOnce() {
        var delivery = delivery()
        #expect(delivery.attempted(.status(204, retryAfter: nil, excerpt: ""), now: start, lastSuccess: start, unitRandom: 0.5)
            == .delivered)
    }

    @Test func serverErrorsBackOffExponentiallyThenDeadLetter() {
        var delivery = delivery()
        var decisions: [WebhookDelivery.Decision] = []
        for attempt in 1...4 {
            // The endpoint accepted other requests recently: it is up, these records fail.
            let now = start + .seconds(attempt)
            decisions.append(delivery.attempted(.status(503, retryAfter: nil, excerpt: "busy"), now: now, lastSuccess: now, unitRandom: 0.5))
        }
        #expect(decisions == [.retry(after: .milliseconds(100)), .retry(after: .milliseconds(200)), .retry(after: .milliseconds(400)),
                              .deadLetter(reason: "undelivered after 4 attempts: status 503: busy")])
    }

    @Test func retryAfterIsHonouredUpToTheCap() {
        var delivery = delivery()
        #expect(delivery.attempted(.status(429, retryAfter: .seconds(5), excerpt: ""), now: start, lastSuccess: start, unitRandom: 0.5)
            == .retry(after: .seconds(5)))
        #expect(delivery.attempted(.status(429, retryAfter: .seconds(3600), excerpt: ""), now: start, lastSuccess: start, unitRandom: 0.5)
            == .retry(after: .seconds(30)))
    }

    @Test func timeoutsAndConnectionErrorsAreRetried() {
        var delivery = delivery()
        #expect(delivery.attempted(.timedOut, now: start, lastSuccess: start, unitRandom: 0) == .retry(after: .zero))
        #expect(delivery.attempted(.connectionFailed("refused"), now: start, lastSuccess: start, unitRandom: 0.99)
            == .retry(after: .milliseconds(396)))
        #expect(delivery.attempted(.status(408, retryAfter: nil, excerpt: ""), now: start, lastSuccess: start, unitRandom: 0)
            == .retry(after: .zero))
    }

    @Test func otherClientErrorsDeadLetterAtOnceWithTheAnswer() {
        var delivery = delivery()
        #expect(delivery.attempted(.status(400, retryAfter: nil, excerpt: "bad marker"), now: start, lastSuccess: start, unitRandom: 0.5)
            == .deadLetter(reason: "the endpoint refused the records: status 400: bad marker (attempt 1)"))
    }

    @Test func anEndpointThatIsDownKeepsItsRecordsUntilItStalls() {
        var delivery = delivery(maxAttempts: 2)
        // Nothing accepted since the request began: past maxAttempts it keeps retrying…
        var decisions: [WebhookDelivery.Decision] = []
        for second in 1...5 {
            decisions.append(delivery.attempted(.connectionFailed("refused"), now: start + .seconds(second), lastSuccess: start,
                                                unitRandom: 0.5))
        }
        #expect(decisions == [.retry(after: .milliseconds(100)), .retry(after: .milliseconds(200)), .retry(after: .milliseconds(400)),
                              .retry(after: .milliseconds(800)), .retry(after: .milliseconds(1600))])
        // …and stalls once the endpoint has accepted nothing for unavailableAfter.
        #expect(delivery.attempted(.connectionFailed("refused"), now: start + .seconds(60), lastSuccess: start, unitRandom: 0.5)
            == .stall(reason: "the endpoint has accepted nothing for 60.0 seconds: refused"))
    }

    @Test func anEndpointThatAcceptsNothingStallsTheProductInsteadOfDeadLettering() {
        var delivery = delivery(maxAttempts: 100)
        let decision = delivery.attempted(.connectionFailed("connection refused"), now: start + .seconds(61), lastSuccess: start,
                                          unitRandom: 0.5)
        #expect(decision == .stall(reason: "the endpoint has accepted nothing for 60.0 seconds: connection refused"))
    }

    @Test func requestsKeepSourceOrderAndRespectTheLimits() throws {
        let schema = Schema(fields: [.init(name: "id", type: .string), .init(name: "n", type: .integer)])
        var records: [OutputRecord] = []
        for index in 0..<7 {
            let key = "k\(index % 2)"
            let body: OutputRecord.Body = index == 6 ? .tombstone : .row([.string(key), .integer(Int64(index))])
            records.append(OutputRecord(key: .string(key), body: body, partition: 0, offset: Int64(100 + index), eventTime: 1_767_225_600_000))
        }
        let lanes = WebhookSink.lanes(of: records, count: 4)
        #expect(lanes.map { $0.count }.reduce(0, +) == 7)
        for lane in lanes {
            let offsets = lane.map { $0.offset }
            #expect(offsets == offsets.sorted())
        }

        let requests = WebhookSink.requests(records, product: "p", schema: schema, maxRecords: 3, maxBytes: 1 << 20)
        #expect(requests.map { $0.records.count } == [3, 3, 1])
        let first = try JSONSerialization.jsonObject(with: Data(requests[0].body)) as! [String: Any]
        #expect(first["product"] as? String == "p")
        let items = first["records"] as! [[String: Any]]
        #expect(items.map { $0["id"] as! String } == ["p:0:100", "p:0:101", "p:0:102"])
        #expect((items[1]["value"] as? [String: Any])?["n"] as? Int == 1)
        #expect(items[0]["time"] as? String == "2026-01-01T00:00:00Z")
        let last = try JSONSerialization.jsonObject(with: Data(requests[2].body)) as! [String: Any]
        #expect(((last["records"] as! [[String: Any]])[0]["value"]) is NSNull)
        // The idempotency key depends on the records alone.
        #expect(requests[0].idempotencyKey == WebhookSink.requests(records, product: "p", schema: schema, maxRecords: 3,
                                                                  maxBytes: 1 << 20)[0].idempotencyKey)
        #expect(requests[0].idempotencyKey != requests[1].idempotencyKey)
        // A byte limit splits too, but never leaves a record out.
        #expect(WebhookSink.requests(records, product: "p", schema: schema, maxRecords: 100, maxBytes: 150).map { $0.records.count }
            == [1, 1, 1, 1, 1, 1, 1])
    }

    @Test func theSignatureIsHMACSHA256OfTimestampDotBody() {
        // Computed independently: printf '1767225600.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        #expect(WebhookSink.signature(body: Array(#"{"a":1}"#.utf8), secret: "s3cret", unixSeconds: 1_767_225_600)
            == "t=1767225600,v1=7d4120fcebf444efab10ba7cd6c651bf463cefb039db5fad37ff9f7231ac8a4a")
    }
}
