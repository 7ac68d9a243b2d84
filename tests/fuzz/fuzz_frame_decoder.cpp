// libFuzzer target: the frame decoder must answer any bytes with a frame or an error, and a
// decoded frame must re-encode to exactly the bytes it came from.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "wire/frame.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> in(data, size);
  while (!in.empty()) {
    macula::wire::Frame frame;
    const auto r = macula::wire::decode(in, frame);
    if (r.error) break;
    std::vector<std::uint8_t> again;
    if (macula::wire::encode(frame, again) || again.size() != r.consumed ||
        !std::equal(again.begin(), again.end(), in.begin()))
      std::abort();
    in = in.subspan(r.consumed);
  }
  return 0;
}
