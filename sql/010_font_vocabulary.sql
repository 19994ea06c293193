-- 010: one name per measure of the drawn text in the stored records. The overlay's layout said
-- font_size and line_spacing, the readability evaluation text_size, for the same pixel sizes:
-- both now say font_size_px (and line_spacing_px), as the code does. Rows written before this
-- migration are renamed in place; their updated_at is left as it was (renaming a key is not a
-- new answer).
ALTER TABLE overlay_layouts DISABLE TRIGGER overlay_layouts_touch_updated_at;
ALTER TABLE evaluations DISABLE TRIGGER evaluations_touch_updated_at;

UPDATE overlay_layouts
   SET layout = (layout - 'font_size') || jsonb_build_object('font_size_px', layout -> 'font_size')
 WHERE layout ? 'font_size';
UPDATE overlay_layouts
   SET layout = (layout - 'line_spacing') || jsonb_build_object('line_spacing_px', layout -> 'line_spacing')
 WHERE layout ? 'line_spacing';
UPDATE evaluations
   SET metrics = (metrics - 'text_size') || jsonb_build_object('font_size_px', metrics -> 'text_size')
 WHERE evaluation_type = 'readability' AND metrics ? 'text_size';

ALTER TABLE overlay_layouts ENABLE TRIGGER overlay_layouts_touch_updated_at;
ALTER TABLE evaluations ENABLE TRIGGER evaluations_touch_updated_at;
