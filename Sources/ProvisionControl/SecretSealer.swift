import Crypto
import Foundation

/// Seals team secrets with the server's secret key (AES-256-GCM), binding each to its
/// `team/name` so that a sealed value copied onto another secret does not open.
public struct SecretSealer: Sendable {
    private let key: SymmetricKey

    public init(key: SymmetricKey) {
        self.key = key
    }

    /// A key that lives as long as the process: for tests, or a server that keeps no secrets.
    public static func ephemeral() -> SecretSealer { SecretSealer(key: SymmetricKey(size: .bits256)) }

    /// The key in `path` (base64 of 32 bytes), created with mode 0600 if there is none.
    public static func loadOrCreate(at path: String) throws -> SecretSealer {
        if let data = FileManager.default.contents(atPath: path) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let bytes = Data(base64Encoded: text), bytes.count == 32 else {
                throw SecretKeyUnreadable(path: path)
            }
            return SecretSealer(key: SymmetricKey(data: bytes))
        }
        let key = SymmetricKey(size: .bits256)
        let text = key.withUnsafeBytes { Data($0).base64EncodedString() } + "\n"
        let descriptor = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { throw POSIXError.current }
        defer { Glibc.close(descriptor) }
        let written = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count - 1) }
        guard written == text.utf8.count, fsync(descriptor) == 0 else { throw POSIXError.current }
        return SecretSealer(key: key)
    }

    func seal(_ value: String, id: String) throws -> String {
        let box = try AES.GCM.seal(Data(value.utf8), using: key, authenticating: Data(id.utf8))
        guard let combined = box.combined else { throw SecretKeyUnreadable(path: "-") }
        return combined.base64EncodedString()
    }

    func open(_ sealed: String, id: String) throws -> String {
        guard let data = Data(base64Encoded: sealed) else { throw SecretCannotBeOpened(id: id) }
        do {
            let box = try AES.GCM.SealedBox(combined: data)
            return String(decoding: try AES.GCM.open(box, using: key, authenticating: Data(id.utf8)), as: UTF8.self)
        } catch {
            throw SecretCannotBeOpened(id: id)
        }
    }
}

public struct SecretKeyUnreadable: Error, CustomStringConvertible {
    public var path: String

    public init(path: String) {
        self.path = path
    }

    public var description: String { "the secret key in \(path) is not base64 of 32 bytes" }
}

/// A sealed secret that the server's key does not open: the key changed since it was set.
public struct SecretCannotBeOpened: Error, CustomStringConvertible {
    public var id: String
    public var description: String { "the secret '\(id)' cannot be opened with this server's secret key; set it again" }
}
