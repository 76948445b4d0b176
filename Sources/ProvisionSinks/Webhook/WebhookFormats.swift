import Crypto
import Foundation
import ProvisionModel
import ProvisionPipeline

/// The Standard Webhooks signature (standardwebhooks.com): `v1,` and the base64 of the
/// HMAC-SHA256 of `id.timestamp.body`, keyed with the bytes a `whsec_<base64>` secret holds.
enum StandardWebhooks {
    static func signature(id: String, unixSeconds: Int64, body: [UInt8], key: [UInt8]?) -> String {
        var message = Array("\(id).\(unixSeconds).".utf8)
        message.append(contentsOf: body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key ?? []))
        return "v1," + Data(mac).base64EncodedString()
    }

    /// The key of `whsec_<base64>`, or of bare base64, as the specification's libraries read
    /// a secret; nil when it is neither, or holds no bytes.
    static func key(fromSecret secret: String) -> [UInt8]? {
        let encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst("whsec_".count)) : secret
        guard let bytes = Data(base64Encoded: encoded), !bytes.isEmpty else { return nil }
        return Array(bytes)
    }
}

/// CloudEvents 1.0 for the webhook sink: an event per record, `id` the record's id,
/// `source` `provision/<product>`, `type` `provision.record.upsert` or
/// `provision.record.delete`, `subject` the key, `time` the record's time, the value as
/// `data` (`application/json`; none for a delete), and the source partition and offset as
/// the extension attributes `partition` and `offset`.
enum CloudEvents {
    static let batchContentType = "application/cloudevents-batch+json"

    static func type(of record: OutputRecord) -> String {
        if case .tombstone = record.body { return "provision.record.delete" }
        return "provision.record.upsert"
    }

    /// Structured-mode batches (`[event, …]`) of at most `maxRecords` events and (unless one
    /// event alone is larger) `maxBytes` bytes.
    static func batches(_ records: [OutputRecord], product: String, schema: Schema, maxRecords: Int, maxBytes: Int) -> [WebhookSink.Request] {
        let keys = JSONRowKeys(schema)
        var source: [UInt8] = []
        JSONWriter.writeString("provision/\(product)", into: &source)
        var batcher = WebhookSink.RequestBatcher(opening: [UInt8(ascii: "[")], closing: [UInt8(ascii: "]")], contentType: batchContentType,
                                                 maxRecords: maxRecords, maxBytes: maxBytes)
        for record in records {
            let id = WebhookSink.recordID(product: product, partition: record.partition, offset: record.offset)
            var event: [UInt8] = Array(#"{"specversion":"1.0","id":"#.utf8)
            JSONWriter.writeString(id, into: &event)
            event.append(contentsOf: #","source":"#.utf8)
            event.append(contentsOf: source)
            event.append(contentsOf: #","type":"#.utf8)
            JSONWriter.writeString(type(of: record), into: &event)
            if let key = record.key, !key.isNull {
                event.append(contentsOf: #","subject":"#.utf8)
                JSONWriter.writeString(key.text, into: &event)
            }
            event.append(contentsOf: #","time":"#.utf8)
            JSONWriter.writeString(Timestamp.format(record.eventTime), into: &event)
            event.append(contentsOf: #","partition":"#.utf8)
            JSONWriter.writeInteger(Int64(record.partition), into: &event)
            event.append(contentsOf: #","offset":"#.utf8)
            JSONWriter.writeInteger(record.offset, into: &event)
            if type(of: record) == "provision.record.upsert" {
                event.append(contentsOf: #","datacontenttype":"application/json","data":"#.utf8)
                if !record.writeJSONValue(keys: keys, into: &event) { event.append(contentsOf: "null".utf8) }
            }
            event.append(UInt8(ascii: "}"))
            batcher.add(event, id: id, partition: record.partition, offset: record.offset)
        }
        return batcher.finish()
    }

    /// A binary-mode event: its attributes as `ce-*` headers, the value as the body.
    static func binary(_ record: OutputRecord, product: String, schema: Schema) -> WebhookSink.Request {
        let id = WebhookSink.recordID(product: product, partition: record.partition, offset: record.offset)
        var headers = [("ce-specversion", "1.0"), ("ce-id", percentEncoded(id)), ("ce-source", percentEncoded("provision/\(product)")),
                       ("ce-type", type(of: record))]
        if let key = record.key, !key.isNull { headers.append(("ce-subject", percentEncoded(key.text))) }
        headers += [("ce-time", Timestamp.format(record.eventTime)), ("ce-partition", String(record.partition)),
                    ("ce-offset", String(record.offset))]
        var body: [UInt8] = []
        var contentType: String?
        if case .tombstone = record.body {} else {
            if !record.writeJSONValue(schema: schema, into: &body) { body = Array("null".utf8) }
            contentType = "application/json"
        }
        return WebhookSink.Request(body: body, records: [(record.partition, record.offset)], idempotencyKey: id,
                                   contentType: contentType, headers: headers)
    }

    /// The HTTP binding's header encoding: printable ASCII as is, but `"` and `%`; every
    /// other byte of the UTF-8 as `%XX`.
    static func percentEncoded(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") && byte != UInt8(ascii: "\"") {
                encoded.append(Character(Unicode.Scalar(byte)))
            } else {
                encoded += String(format: "%%%02X", byte)
            }
        }
        return encoded
    }
}
