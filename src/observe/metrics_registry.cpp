#include "macula/observe/metrics_registry.hpp"

#include <charconv>
#include <cmath>
#include <system_error>

#include "macula/error.hpp"

namespace macula::observe {
namespace {

bool valid_name(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (digit && i > 0))) return false;
  }
  return true;
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    (void)ec;
    out.append(buf, end);
  }
}

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, end);
}

// Label values escape backslash, double quote and newline; HELP escapes backslash, newline.
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out += c;
  }
}

void append_labels(std::string& out, const Labels& labels, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    out += k;
    out += "=\"";
    append_escaped(out, v, true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

}  // namespace

MetricsRegistry::Series& MetricsRegistry::series(std::string_view name, std::string_view help, Type type,
                                                 const Labels& labels) {
  if (!valid_name(name, true)) throw std::system_error(errc::metrics_name_invalid, std::string(name));
  for (const auto& [k, v] : labels) {
    (void)v;
    if (!valid_name(k, false) || k.starts_with("__") || (type == Type::histogram && k == "le"))
      throw std::system_error(errc::metrics_name_invalid, std::string(name) + " label " + k);
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  } else if (it->second.type != type || it->second.help != help) {
    throw std::system_error(errc::metrics_type_conflict, std::string(name));
  }
  for (auto& s : it->second.series)
    if (s->labels == labels) return *s;
  if (series_count_ >= max_series_) throw std::system_error(errc::metrics_series_limit, std::string(name));
  auto s = std::make_unique<Series>();
  s->labels = labels;
  ++series_count_;
  it->second.series.push_back(std::move(s));
  return *it->second.series.back();
}

void MetricsRegistry::counter_callback(std::string_view name, std::string_view help, const Labels& labels,
                                       std::function<double()> read) {
  std::lock_guard lock(mutex_);
  Series& s = series(name, help, Type::counter, labels);
  if (s.counter) throw std::system_error(errc::metrics_type_conflict, std::string(name));
  s.callback = std::move(read);
}

core::Counter& MetricsRegistry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Series& s = series(name, help, Type::counter, labels);
  if (s.callback) throw std::system_error(errc::metrics_type_conflict, std::string(name));
  if (!s.counter) s.counter = std::make_unique<core::Counter>();
  return *s.counter;
}

core::Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Series& s = series(name, help, Type::gauge, labels);
  if (s.callback) throw std::system_error(errc::metrics_type_conflict, std::string(name));
  if (!s.gauge) s.gauge = std::make_unique<core::Gauge>();
  return *s.gauge;
}

core::Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help, const Labels& labels,
                                            std::vector<double> bounds) {
  std::lock_guard lock(mutex_);
  Series& s = series(name, help, Type::histogram, labels);
  if (!s.histogram) s.histogram = std::make_unique<core::Histogram>(std::move(bounds));
  return *s.histogram;
}

void MetricsRegistry::gauge_callback(std::string_view name, std::string_view help, const Labels& labels,
                                     std::function<double()> read) {
  std::lock_guard lock(mutex_);
  Series& s = series(name, help, Type::gauge, labels);
  if (s.gauge) throw std::system_error(errc::metrics_type_conflict, std::string(name));
  s.callback = std::move(read);
}

void MetricsRegistry::remove_gauge_callback(std::string_view name, const Labels& labels) {
  std::lock_guard lock(mutex_);
  auto it = families_.find(name);
  if (it == families_.end()) return;
  auto& list = it->second.series;
  for (auto s = list.begin(); s != list.end(); ++s) {
    if ((*s)->labels == labels && (*s)->callback) {
      list.erase(s);
      --series_count_;
      break;
    }
  }
  if (list.empty()) families_.erase(it);
}

std::size_t MetricsRegistry::series_count() const {
  std::lock_guard lock(mutex_);
  return series_count_;
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped(out, family.help, false);
    out += "\n# TYPE ";
    out += name;
    out += family.type == Type::counter ? " counter\n" : family.type == Type::gauge ? " gauge\n" : " histogram\n";
    for (const auto& s : family.series) {
      if (family.type == Type::histogram) {
        const auto snap = s->histogram->snapshot();
        for (std::size_t i = 0; i <= snap.bounds.size(); ++i) {
          std::string le;
          if (i < snap.bounds.size()) append_number(le, snap.bounds[i]);
          else le = "+Inf";
          out += name;
          out += "_bucket";
          append_labels(out, s->labels, "le", le);
          out += ' ';
          append_number(out, snap.cumulative[i]);
          out += '\n';
        }
        out += name;
        out += "_sum";
        append_labels(out, s->labels);
        out += ' ';
        append_number(out, snap.sum);
        out += '\n';
        out += name;
        out += "_count";
        append_labels(out, s->labels);
        out += ' ';
        append_number(out, snap.count);
        out += '\n';
        continue;
      }
      out += name;
      append_labels(out, s->labels);
      out += ' ';
      if (s->counter) append_number(out, s->counter->value());
      else if (s->gauge) append_number(out, s->gauge->value());
      else if (s->callback) append_number(out, s->callback());
      out += '\n';
    }
  }
  return out;
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  append_escaped(out, value, true);
  return out;
}

}  // namespace macula::observe
