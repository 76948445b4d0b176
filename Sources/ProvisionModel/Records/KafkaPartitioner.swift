/// Which partition a record goes to: Kafka's default partitioner, so a record Provision
/// produces lands in the partition a Java or librdkafka (`murmur2_random`) producer would
/// choose for the same key, and per-key order holds whoever writes the topic.
///
/// A keyed record goes to `toPositive(murmur2(key)) % partitions`. A record without a key
/// has no partition of its own; the caller picks one (Kafka's sticky partitioner keeps a
/// whole batch on one partition, and so does `produce`).
public enum KafkaPartitioner {
    public static func partition(forKey key: [UInt8], partitions: Int) -> Int {
        precondition(partitions > 0, "a topic has at least one partition")
        return Int(UInt32(bitPattern: murmur2(key)) & 0x7fff_ffff) % partitions
    }

    /// Kafka's `Utils.murmur2`: MurmurHash2, 32 bits, seed 0x9747b28c, little-endian words,
    /// as Java computes it with wrapping `int` arithmetic.
    public static func murmur2(_ data: [UInt8]) -> Int32 {
        let m: UInt32 = 0x5bd1_e995
        let length = data.count
        var h: UInt32 = 0x9747_b28c ^ UInt32(truncatingIfNeeded: length)
        let whole = length & ~3
        var index = 0
        while index < whole {
            var k = UInt32(data[index]) | UInt32(data[index + 1]) << 8 | UInt32(data[index + 2]) << 16 | UInt32(data[index + 3]) << 24
            k &*= m
            k ^= k >> 24
            k &*= m
            h &*= m
            h ^= k
            index += 4
        }
        let remaining = length & 3
        if remaining >= 3 { h ^= UInt32(data[whole + 2]) << 16 }
        if remaining >= 2 { h ^= UInt32(data[whole + 1]) << 8 }
        if remaining >= 1 {
            h ^= UInt32(data[whole])
            h &*= m
        }
        h ^= h >> 13
        h &*= m
        h ^= h >> 15
        return Int32(bitPattern: h)
    }
}
