"""The functions analysts may call: ordinary scalar, aggregate, window and set-returning
functions. Anything else (files, large objects, dblink, settings, sleeping, locks,
administration, catalog introspection) is rejected before the query reaches Postgres.

Names are Postgres function names and, for functions sqlglot parses into typed nodes,
sqlglot's lower-case node key (``timestamptrunc`` for ``date_trunc``).
"""

AGGREGATES = {
    "count", "sum", "avg", "min", "max", "stddev", "stddev_pop", "stddev_samp", "variance",
    "var_pop", "var_samp", "bool_and", "bool_or", "every", "string_agg", "array_agg",
    "percentile_cont", "percentile_disc", "mode", "corr", "covar_pop", "covar_samp",
    "regr_slope", "regr_intercept", "regr_count", "regr_r2", "regr_avgx", "regr_avgy",
    "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "bit_and", "bit_or",
    "countif", "arrayagg", "groupconcat", "stddevpop", "stddevsamp", "varpop", "variancepop",
    "percentilecont", "percentiledisc", "logicaland", "logicalor", "covarpop", "covarsamp",
    "anyvalue", "approxdistinct", "quantile", "median", "jsonbagg", "jsonagg",
    "jsonobjectagg", "jsonbobjectagg", "arrayconcatagg", "jsonarrayagg",
}  # fmt: skip
WINDOWS = {
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value", "rownumber", "denserank", "percentrank",
    "cumedist", "firstvalue", "lastvalue", "nthvalue",
}  # fmt: skip
SCALARS = {
    # numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "power", "pow",
    "exp", "ln", "log", "log10", "mod", "sign", "greatest", "least", "width_bucket", "pi",
    "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "div",
    "random", "gcd", "lcm", "scale", "factorial", "isnan", "safedivide",
    # text
    "lower", "upper", "length", "char_length", "character_length", "octet_length",
    "substring", "substr", "trim", "ltrim", "rtrim", "btrim", "concat", "concat_ws",
    "replace", "split_part", "left", "right", "lpad", "rpad", "position", "strpos",
    "starts_with", "initcap", "reverse", "repeat", "md5", "regexp_replace", "regexp_match",
    "regexp_matches", "regexp_like", "regexp_split_to_array", "translate", "to_char",
    "to_number", "to_date", "to_timestamp", "format", "ascii", "chr", "quote_literal",
    "quote_ident", "string_to_array", "array_to_string", "encode", "decode", "sha256",
    "strposition", "stuff", "regexpextract", "regexpreplace", "regexplike", "regexpilike",
    "startswith", "splitpart", "dpipe", "pad", "unicode", "lengthbytes", "bitlength",
    "sha2", "tochar", "tonumber", "strtotime", "strtodate", "timestrtotime", "unixtotime",
    "totimestamp",
    # null and conditionals
    "coalesce", "nullif", "if", "case", "ifnull", "nvl",
    # dates and times
    "date_trunc", "date_part", "extract", "date_bin", "now", "current_timestamp",
    "current_date", "current_time", "localtimestamp", "localtime", "age", "make_date",
    "make_time", "make_timestamp", "make_timestamptz", "make_interval", "justify_days",
    "justify_hours", "justify_interval", "timezone", "statement_timestamp",
    "transaction_timestamp", "clock_timestamp", "isfinite",
    "timestamptrunc", "datetrunc", "currenttimestamp", "currentdate", "currenttime",
    "currentdatetime", "datebin", "dateadd", "datesub", "datediff", "timestampadd",
    "timestampsub", "timestampdiff", "atttimezone", "attimezone", "converttimezone",
    "timestampfromparts", "datefromparts", "makeinterval", "lastday", "dayofweek",
    "dayofmonth", "dayofyear", "weekofyear", "year", "month", "day", "quarter", "week",
    "hour", "minute", "second", "datetostr", "timetostr", "unixtodate", "timetounix",
    "currenttimestampltz",
    # json
    "jsonb_extract_path", "jsonb_extract_path_text", "json_extract_path",
    "json_extract_path_text", "jsonb_array_length", "json_array_length", "jsonb_typeof",
    "json_typeof", "jsonb_build_object", "json_build_object", "jsonb_build_array",
    "json_build_array", "to_json", "to_jsonb", "jsonb_strip_nulls", "jsonb_pretty",
    "jsonb_object_keys", "json_object_keys", "jsonextract", "jsonextractscalar",
    "jsonbextract", "jsonbextractscalar", "jsonbcontains", "jsonbexists", "jsonobject",
    "jsonarray", "jsonformat", "jsonbobjectagg", "parsejson", "jsonarraycontains",
    "jsonbcontainsanytopkeys", "jsonbcontainsalltopkeys", "jsonbdeleteatpath",
    # arrays and sets
    "array_length", "cardinality", "array_position", "array_positions", "array_remove",
    "array_append", "array_prepend", "array_cat", "array_lower", "array_upper",
    "array_dims", "array", "arraysize", "arraycontains", "arraycontained", "arrayoverlaps",
    "arrayconcat", "arraytostring", "stringtoarray", "arrayfirst", "arraylast",
    "arrayappend", "arrayprepend", "arrayposition", "arrayremove", "arraycardinality",
    "unnest", "explode", "generate_series", "generateseries", "explodinggenerateseries",
    "jsonb_array_elements", "jsonb_array_elements_text", "json_array_elements",
    "json_array_elements_text", "jsonb_each", "jsonb_each_text", "json_each",
    "json_each_text", "jsonb_to_recordset", "json_to_recordset", "posexplode",
    # connectives sqlglot models as functions
    "and", "or", "xor", "not", "exists",
    # casts and misc
    "cast", "trycast", "convert", "struct", "tuple", "md5digest", "lowerhex", "hex",
    "typeof", "num_nulls", "num_nonnulls", "bool", "columns", "filter",
}  # fmt: skip

ALLOWED_FUNCTIONS = frozenset(AGGREGATES | WINDOWS | SCALARS)
