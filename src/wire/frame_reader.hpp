// FrameReader: turns a byte stream (a session's DATA, split anywhere) into frames.
//
// Bytes that do not yet form a whole frame are kept — at most one maximum-size frame's
// worth, since a header announcing more is refused at once — so memory per session stream is
// bounded by the maximum frame size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <system_error>
#include <vector>

#include "macula/error.hpp"
#include "wire/frame.hpp"

namespace macula::wire {

class FrameReader {
 public:
  explicit FrameReader(std::size_t max_frame_size = kDefaultMaxFrameSize) : max_(max_frame_size) {}

  /// Feeds bytes; calls `on_frame(Frame&&)` for each complete frame, in order. Returns the
  /// first protocol error (the stream must then be closed; the reader is unusable after it).
  template <class F>
  std::error_code feed(std::span<const std::uint8_t> bytes, F&& on_frame) {
    if (error_) return error_;
    // Fast path: nothing buffered, decode straight from the input.
    if (buffer_.empty()) {
      if (auto ec = drain(bytes, on_frame)) return ec;
      buffer_.assign(bytes.begin(), bytes.end());
      return {};
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    std::span<const std::uint8_t> view(buffer_);
    if (auto ec = drain(view, on_frame)) return ec;
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(buffer_.size() - view.size()));
    return {};
  }

  std::size_t buffered() const noexcept { return buffer_.size(); }

 private:
  template <class F>
  std::error_code drain(std::span<const std::uint8_t>& in, F& on_frame) {
    while (!in.empty()) {
      Frame frame;
      const DecodeResult r = decode(in, frame, max_);
      if (r.error == errc::frame_truncated) return {};
      if (r.error) return error_ = r.error;
      in = in.subspan(r.consumed);
      on_frame(std::move(frame));
    }
    return {};
  }

  std::size_t max_;
  std::vector<std::uint8_t> buffer_;
  std::error_code error_;
};

}  // namespace macula::wire
